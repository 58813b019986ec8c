"""RidgeSeg, PoolSeg and UniverSeg network properties: order invariance, any k, text-only, parameter count."""

from __future__ import annotations

import pytest
import torch

from medground.icl.model import PoolSegConfig
from medground.icl.segmenter import InContextModel
from medground.icl.universeg import UniverSeg, UniverSegConfig


def _episode(k: int, q: int = 2, size: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(1, k, 3, size, size, generator=g)
    masks = (torch.rand(1, k, 1, size, size, generator=g) > 0.7).float()
    queries = torch.rand(1, q, 3, size, size, generator=g)
    return queries, images, masks


@torch.no_grad()
def test_support_order_does_not_matter(tiny_model: InContextModel) -> None:
    queries, images, masks = _episode(5)
    perm = torch.tensor([3, 0, 4, 2, 1])
    a = tiny_model(queries, images, masks)
    b = tiny_model(queries, images[:, perm], masks[:, perm])
    assert torch.allclose(a, b, atol=1e-5)


@torch.no_grad()
def test_changing_the_support_changes_the_output(tiny_model: InContextModel) -> None:
    queries, images, masks = _episode(3)
    a = tiny_model(queries, images, masks)
    b = tiny_model(queries, images, 1 - masks)
    assert not torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("k", [1, 2, 7])
@torch.no_grad()
def test_any_k_gives_one_mask_per_query(tiny_model: InContextModel, k: int) -> None:
    queries, images, masks = _episode(k, q=3)
    assert tiny_model(queries, images, masks).shape == (1, 3, 1, 32, 32)


@torch.no_grad()
def test_k0_with_text_works_and_depends_on_text(tiny_model: InContextModel) -> None:
    queries, images, masks = _episode(0)
    t1, t2 = torch.randn(1, 384), torch.randn(1, 384)
    a = tiny_model(queries, images, masks, t1)
    b = tiny_model(queries, images, masks, t2)
    assert a.shape == (1, 2, 1, 32, 32)
    assert not torch.allclose(a, b)


def test_k0_without_text_is_an_error(tiny_model: InContextModel) -> None:
    queries, images, masks = _episode(0)
    with pytest.raises(ValueError, match="text"):
        tiny_model(queries, images, masks)


@torch.no_grad()
def test_context_is_reusable_and_batched_queries_match_single(tiny_model: InContextModel) -> None:
    queries, images, masks = _episode(4, q=3)
    ctx = tiny_model.encode_support(images, masks)
    together = tiny_model.segment(queries, ctx)
    one_by_one = torch.cat([tiny_model.segment(queries[:, i : i + 1], ctx) for i in range(3)], 1)
    assert torch.allclose(together, one_by_one, atol=1e-5)


def test_config_json_round_trip_and_unknown_keys(tmp_path) -> None:
    cfg = PoolSegConfig(size=32, widths=(4, 8))
    cfg.to_json(tmp_path / "c.json")
    assert PoolSegConfig.from_json(tmp_path / "c.json") == cfg
    (tmp_path / "bad.json").write_text('{"size": 32, "depth": 3}')
    with pytest.raises(ValueError, match="depth"):
        PoolSegConfig.from_json(tmp_path / "bad.json")


def test_size_must_fit_the_number_of_scales() -> None:
    with pytest.raises(ValueError, match=r"positive multiple of 2\*\*3"):
        PoolSegConfig(size=36, widths=(4, 8, 8, 8))


def test_universeg_paper_config_has_1_18m_parameters() -> None:
    # Counted by hand from the paper's description: a 3x3 conv cin->cout has 9*cin*cout + cout parameters.
    def conv(cin: int, cout: int) -> int:
        return 9 * cin * cout + cout

    first = conv(1 + 2, 64) + 2 * conv(64, 64)  # query 1 ch + support image/label 2 ch
    enc = first + 3 * (conv(128, 64) + 2 * conv(64, 64))
    dec = 3 * (conv(256, 64) + 2 * conv(64, 64))  # (up 64 + skip 64) on both sides
    head = 64 + 1
    expected = enc + dec + head
    got = sum(p.numel() for p in UniverSeg().parameters())
    assert got == expected
    assert 1.17e6 < got < 1.19e6


@torch.no_grad()
def test_universeg_is_support_order_invariant() -> None:
    torch.manual_seed(0)
    net = UniverSeg(UniverSegConfig(size=32, encoder_widths=(4, 4, 4), decoder_widths=(4, 4)))
    queries, images, masks = _episode(4)
    q = queries[:, :1, :1]
    a = net(q, images[:, :, :1], masks)
    perm = torch.tensor([2, 3, 1, 0])
    b = net(q, images[:, perm, :1], masks[:, perm])
    assert a.shape == (1, 1, 1, 32, 32)
    assert torch.allclose(a, b, atol=1e-5)


@torch.no_grad()
def test_universeg_in_context_interface_is_its_forward_on_gray_images_per_query() -> None:
    """encode_support/segment (how training and icl-eval call every architecture) equal the paper's
    forward, query by query, on the channel mean of RGB inputs; a text is ignored; k = 0 is refused."""
    torch.manual_seed(0)
    net = UniverSeg(UniverSegConfig(size=32, encoder_widths=(4, 4, 4), decoder_widths=(4, 4)))
    queries, images, masks = _episode(3, q=2)
    got = net.segment(queries, net.encode_support(images, masks, torch.ones(1, 384)))
    assert got.shape == (1, 2, 1, 32, 32)
    for i in range(2):
        gray = queries[:, i : i + 1].mean(2, keepdim=True)
        want = net(gray, images.mean(2, keepdim=True), masks)
        assert torch.allclose(got[:, i : i + 1], want, atol=1e-6)
    with pytest.raises(ValueError, match="at least one support"):
        net.encode_support(images[:, :0], masks[:, :0])


def test_adaptation_returns_a_changed_copy_and_keeps_the_original(tiny_model: InContextModel) -> None:
    from medground.icl.adapt import adapt_to_support

    _, images, masks = _episode(2)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    adapted = adapt_to_support(tiny_model, images[0], masks[0], steps=2)
    assert not adapted.training
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert any(not torch.equal(v, before[k]) for k, v in adapted.state_dict().items())
