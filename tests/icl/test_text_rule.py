"""RidgeSeg's text rule (text beside supports is kept only if leave-one-out over the supports says it
does not hurt), on cases where the answer is known by construction, through the model, the facade and
icl-eval's "+text" method."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from icl_helpers import FakeTextEncoder, disc, tiny_ridgeseg

from medground.icl.evaluate import _predict
from medground.icl.segmenter import InContextSegmenter
from medground.icl.solver import RidgeSeg
from medground.icl.targets import SegTarget

SIZE = 32
HUGE = 100.0
"""A logit offset that turns every pixel into foreground (or, negated, background)."""


def _disc_task(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n bright discs (radius 4-6) at random places on a noisy dark background: (n, 3, S, S), (n, 1, S, S).
    An untrained RidgeSeg segments them from two examples with Dice > 0.9 (test_solver)."""
    rng = np.random.default_rng(0)
    images, masks = [], []
    for _ in range(n):
        mask = disc(SIZE, SIZE, int(rng.integers(8, 24)), int(rng.integers(8, 24)), int(rng.integers(4, 7)))
        image = 0.2 + 0.6 * mask + 0.05 * rng.standard_normal((SIZE, SIZE))
        images.append(torch.tensor(image, dtype=torch.float32).expand(3, -1, -1))
        masks.append(torch.tensor(mask, dtype=torch.float32)[None])
    return torch.stack(images), torch.stack(masks)


def _text_shifts_logits(model: RidgeSeg, offset: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the refinement add ``offset`` to every logit exactly when the episode has a text, and
    nothing otherwise: the global vector becomes the has-text flag, the refinement the flag times offset."""

    def glob(text: torch.Tensor, k: int, prior: torch.Tensor) -> torch.Tensor:
        flag = (text.abs().sum(1, keepdim=True) > 0).to(text.dtype)
        return flag.expand(-1, model.config.global_dim)

    def refined(ridge, prior, images, glob_vec):
        return model.logit_scale * ridge + model.logit_bias + offset * glob_vec[:, :1, None, None]

    monkeypatch.setattr(model, "_glob", glob)
    monkeypatch.setattr(model, "_refined", refined)


def _dice(logits: torch.Tensor, masks: torch.Tensor) -> float:
    pred, truth = logits > 0, masks > 0.5
    return float(2 * (pred & truth).sum() / (pred.sum() + truth.sum()))


@pytest.fixture
def text() -> torch.Tensor:
    return FakeTextEncoder().encode(["bright disc"])


@torch.no_grad()
def test_a_text_that_wrecks_the_fit_is_dropped(monkeypatch: pytest.MonkeyPatch, text: torch.Tensor) -> None:
    """With the text every pixel becomes foreground (Dice of a small disc about 0.1): the leave-one-out
    fit of the supports shows it, so the context is the one without text."""
    model = tiny_ridgeseg()
    _text_shifts_logits(model, HUGE, monkeypatch)
    images, masks = _disc_task(8)
    support, query = (images[None, :4], masks[None, :4]), images[None, 4:]
    ctx = model.encode_support(*support, text)
    assert ctx.text_used.tolist() == [False]
    plain = model.segment(query, model.encode_support(*support))
    assert torch.equal(model.segment(query, ctx), plain)
    assert _dice(plain[0], masks[4:]) > 0.9


@torch.no_grad()
def test_a_text_that_repairs_the_fit_is_kept(monkeypatch: pytest.MonkeyPatch, text: torch.Tensor) -> None:
    """Without the text every pixel is background (logit bias -HUGE); the text adds +HUGE back, so only
    with it do the supports (and the queries) get their discs: the rule keeps it."""
    model = tiny_ridgeseg()
    model.logit_bias.data.fill_(-HUGE)
    _text_shifts_logits(model, HUGE, monkeypatch)
    images, masks = _disc_task(8)
    support, query = (images[None, :4], masks[None, :4]), images[None, 4:]
    ctx = model.encode_support(*support, text)
    assert ctx.text_used.tolist() == [True]
    assert _dice(model.segment(query, ctx)[0], masks[4:]) > 0.9
    assert _dice(model.segment(query, model.encode_support(*support))[0], masks[4:]) == 0.0


@torch.no_grad()
def test_one_support_cannot_validate_a_text(monkeypatch: pytest.MonkeyPatch, text: torch.Tensor) -> None:
    """k = 1: dropped even where it would help (nothing to hold out); k = 0: text alone, untouched."""
    model = tiny_ridgeseg()
    model.logit_bias.data.fill_(-HUGE)
    _text_shifts_logits(model, HUGE, monkeypatch)
    images, masks = _disc_task(2)
    assert model.encode_support(images[None, :1], masks[None, :1], text).text_used.tolist() == [False]
    alone = model.encode_support(images[None, :0], masks[None, :0], text)
    assert alone.text_used is None and alone.k == 0
    assert torch.equal(alone.weights, model.text_weights(text))


def test_training_episodes_keep_their_text(monkeypatch: pytest.MonkeyPatch, text: torch.Tensor) -> None:
    """The rule protects users at inference; training must still see the text it learns from."""
    model = tiny_ridgeseg().train()
    _text_shifts_logits(model, HUGE, monkeypatch)
    images, masks = _disc_task(4)
    ctx = model.encode_support(images[None], masks[None], text)
    assert ctx.text_used is None and bool((ctx.glob == 1).all())


@torch.no_grad()
def test_the_facade_and_icl_eval_go_through_the_rule(
    monkeypatch: pytest.MonkeyPatch, text: torch.Tensor
) -> None:
    """`medground segment` (the facade) and icl-eval's "+text" method both give the no-text masks when
    the text hurts, and icl-eval records that the text was dropped."""
    model = tiny_ridgeseg()
    _text_shifts_logits(model, HUGE, monkeypatch)
    images, masks = _disc_task(6)
    to_uint8 = [(img[0].numpy() * 255).astype(np.uint8) for img in images]
    pairs = [(to_uint8[i], masks[i, 0].numpy().astype(np.uint8)) for i in range(4)]
    seg = InContextSegmenter(model, text_encoder=FakeTextEncoder())
    assert seg.encode_support(pairs, "bright disc").text_used.tolist() == [False]
    np.testing.assert_array_equal(
        seg.segment(to_uint8[4], support=pairs, text="bright disc"), seg.segment(to_uint8[4], support=pairs)
    )

    task = SegTarget("discs", "disc", "bright disc", images, masks, [f"img{i}" for i in range(6)])
    models = {"icl": model, "unet_steps": 0, "adapt_steps": 0}
    with_text, used = _predict("ridgeseg+text", models, task, [0, 1, 2, 3], [4, 5], text[0], seed=0)
    plain, none = _predict("ridgeseg", models, task, [0, 1, 2, 3], [4, 5], text[0], seed=0)
    assert used is False and none is None
    assert torch.equal(with_text, plain)
