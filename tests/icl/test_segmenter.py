"""InContextSegmenter facade: sizes, errors, save/load, NIfTI round trip, output names."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from icl_helpers import FakeTextEncoder, disc, tiny_ridgeseg
from PIL import Image

from medground.icl.outputs import segment_files
from medground.icl.segmenter import InContextSegmenter, load_pretrained, save_pretrained


def _pair(h: int, w: int, rgb: bool = False) -> tuple[np.ndarray, np.ndarray]:
    mask = disc(h, w, h / 2, w / 2, min(h, w) / 4)
    image = (mask * 180 + 30).astype(np.uint8)
    if rgb:
        image = np.stack([image, image // 2, 255 - image], axis=2)
    return image, mask.astype(np.uint8) * 255


def test_masks_come_back_at_each_query_size(segmenter: InContextSegmenter) -> None:
    support = [_pair(40, 60), _pair(70, 30, rgb=True)]
    queries = [_pair(45, 70)[0], _pair(23, 91, rgb=True)[0]]
    probs = segmenter.segment(queries, support=support)
    assert [p.shape for p in probs] == [(45, 70), (23, 91)]
    assert all(p.dtype == np.float32 and p.min() >= 0 and p.max() <= 1 for p in probs)
    single = segmenter.segment(queries[0], support=support)
    assert isinstance(single, np.ndarray) and single.shape == (45, 70)


def test_encode_once_equals_passing_the_support(segmenter: InContextSegmenter) -> None:
    support = [_pair(40, 60), _pair(50, 50)]
    query = _pair(33, 44)[0]
    ctx = segmenter.encode_support(support)
    np.testing.assert_allclose(
        segmenter.segment(query, context=ctx), segmenter.segment(query, support=support), atol=1e-6
    )


def test_text_alone_works_and_empty_prompt_is_an_error(segmenter: InContextSegmenter) -> None:
    query = _pair(30, 40)[0]
    assert segmenter.segment(query, text="left kidney").shape == (30, 40)
    with pytest.raises(ValueError, match="support pair or a text"):
        segmenter.segment(query)


def test_mismatched_pair_names_both_sizes(segmenter: InContextSegmenter) -> None:
    image, _ = _pair(40, 60)
    _, mask = _pair(40, 61)
    with pytest.raises(ValueError, match=r"support pair 0: image is 60x40 .* mask is 61x40"):
        segmenter.encode_support([(image, mask)])


def test_empty_support_mask_is_an_error(segmenter: InContextSegmenter) -> None:
    good = _pair(40, 60)
    image, mask = _pair(40, 60)
    with pytest.raises(ValueError, match="support pair 1: the mask is empty"):
        segmenter.encode_support([good, (image, np.zeros_like(mask))])


def test_save_and_load_give_the_same_masks(segmenter: InContextSegmenter, tmp_path: Path) -> None:
    save_pretrained(segmenter.model, tmp_path / "m")
    again = InContextSegmenter(load_pretrained(tmp_path / "m"), text_encoder=FakeTextEncoder())
    support, query = [_pair(40, 60)], _pair(30, 30)[0]
    np.testing.assert_allclose(
        again.segment(query, support=support), segmenter.segment(query, support=support), atol=1e-6
    )
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(tmp_path / "missing")


def test_nifti_round_trip_puts_an_asymmetric_shape_back_where_it_was(tmp_path: Path) -> None:
    """An L-shaped bright structure off-centre in voxel space (24 x 20 x 5, permuted, non-RAS affine): the
    mask written back must cover exactly those voxels, so a flip or transpose of the display round trip
    fails (an L has no mirror or transpose symmetry, and it sits in one corner)."""
    shape = np.zeros((24, 20), bool)
    shape[2:12, 2:6] = True  # the L's long bar along the first voxel axis
    shape[9:12, 6:14] = True  # its foot along the second axis
    volume = np.stack([np.where(shape, 200, 20).astype(np.int16) for _ in range(5)], axis=2)
    affine = np.array([[0.0, -0.8, 0, 12.5], [0.9, 0, 0, -3.0], [0, 0, 2.5, 40.0], [0, 0, 0, 1]])
    src = nib.Nifti1Image(volume, affine)
    src.header.set_zooms((0.9, 0.8, 2.5))
    nib.save(src, tmp_path / "ct.nii.gz")
    # the support is an unrelated 2D image whose bright disc is the structure: the untrained ridge
    # solver then marks bright voxels, wherever the display put them
    segmenter = InContextSegmenter(tiny_ridgeseg(), text_encoder=FakeTextEncoder())
    support = [(np.where(disc(30, 30, 12, 17, 7), 200, 20).astype(np.uint8), disc(30, 30, 12, 17, 7))]
    mask = segmenter.segment_volume(tmp_path / "ct.nii.gz", support=support, out=tmp_path / "seg.nii.gz")
    back = nib.load(tmp_path / "seg.nii.gz")
    assert mask.shape == (24, 20, 5) and back.shape == (24, 20, 5)
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    np.testing.assert_allclose(back.header.get_zooms(), (0.9, 0.8, 2.5), atol=1e-5)
    assert back.get_data_dtype() == np.uint8
    written = np.asarray(back.dataobj).astype(bool)
    np.testing.assert_array_equal(written, mask.astype(bool))
    for z in range(5):
        got = written[:, :, z]
        dice = 2 * (got & shape).sum() / (got.sum() + shape.sum())
        assert dice > 0.9, (z, dice)
        for wrong in (shape[::-1], shape[:, ::-1]):  # a flipped answer would score low
            assert 2 * (got & wrong).sum() / (got.sum() + wrong.sum()) < 0.5


def test_queries_with_the_same_file_stem_get_distinct_outputs(
    segmenter: InContextSegmenter, tmp_path: Path
) -> None:
    save_pretrained(segmenter.model, tmp_path / "m")
    img, msk = _pair(40, 60)
    Image.fromarray(img).save(tmp_path / "s.png")
    Image.fromarray(msk).save(tmp_path / "s_mask.png")
    for folder, (h, w) in (("a", (30, 44)), ("b", (52, 36))):
        (tmp_path / folder).mkdir()
        Image.fromarray(_pair(h, w)[0]).save(tmp_path / folder / "scan.png")
    written = segment_files(
        [tmp_path / "a/scan.png", tmp_path / "b/scan.png"],
        tmp_path / "out",
        [(tmp_path / "s.png", tmp_path / "s_mask.png")],
        model=tmp_path / "m",
    )
    assert len(set(written)) == 4 and all(p.is_file() for p in written)
    assert np.asarray(Image.open(tmp_path / "out/scan__a.png")).shape == (30, 44)
    assert np.asarray(Image.open(tmp_path / "out/scan__b.png")).shape == (52, 36)


def test_segment_files_writes_png_and_overlay_at_query_size(
    segmenter: InContextSegmenter, tmp_path: Path
) -> None:
    save_pretrained(segmenter.model, tmp_path / "m")
    img, msk = _pair(40, 60)
    Image.fromarray(img).save(tmp_path / "s.png")
    Image.fromarray(msk).save(tmp_path / "s_mask.png")
    Image.fromarray(_pair(37, 52, rgb=True)[0]).save(tmp_path / "q.jpg")
    segment_files(
        [tmp_path / "q.jpg"],
        tmp_path / "out",
        [(tmp_path / "s.png", tmp_path / "s_mask.png")],
        model=tmp_path / "m",
    )
    mask = np.asarray(Image.open(tmp_path / "out/q.png"))
    assert mask.shape == (37, 52) and set(np.unique(mask)) <= {0, 255}
    assert np.asarray(Image.open(tmp_path / "out/q_overlay.png")).shape == (37, 52, 3)


def test_loading_a_folder_of_another_architecture_names_the_known_ones(tmp_path: Path) -> None:
    from medground.icl.segmenter import load_pretrained

    (tmp_path / "config.json").write_text('{"architecture": "universeg", "size": 64}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="poolseg.*ridgeseg"):
        load_pretrained(tmp_path)


def test_another_working_size_keeps_the_weights_and_only_ridgeseg_has_one(
    segmenter: InContextSegmenter, tmp_path: Path
) -> None:
    save_pretrained(segmenter.model, tmp_path / "m")
    if segmenter.model.architecture != "ridgeseg":
        with pytest.raises(ValueError, match="works at 32 only"):
            load_pretrained(tmp_path / "m", size=64)
        return
    wider = load_pretrained(tmp_path / "m", size=64)
    assert wider.config.size == 64 and load_pretrained(tmp_path / "m").config.size == 32
    for name, value in segmenter.model.state_dict().items():
        assert torch.equal(wider.state_dict()[name], value), name
    probs = InContextSegmenter(wider, text_encoder=FakeTextEncoder()).segment(
        _pair(45, 70)[0], support=[_pair(40, 60)]
    )
    assert probs.shape == (45, 70)
    for bad in (0, 33):  # the refinement U-Net's 2 scales halve the size once: it must be even and >= 2
        with pytest.raises(ValueError, match=f"size {bad} must be"):
            load_pretrained(tmp_path / "m", size=bad)


def test_a_larger_working_size_resolves_thin_structures() -> None:
    """Lines 3 px wide in 256 x 256 images are 0.75 px wide at the shipped weights' own size (64), too
    thin to be drawn there, and 1.5 px at 128. Shipped weights, 4 supports, one query with other lines."""

    def lines(seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        image, mask = rng.normal(90, 12, (256, 256)), np.zeros((256, 256), bool)
        for _ in range(3):
            x, y = rng.integers(20, 236, size=2)
            mask[:, x : x + 3] = mask[y : y + 3, :] = True
        image[mask] += 80
        return np.clip(image, 0, 255).astype(np.uint8), mask.astype(np.uint8) * 255

    support, (query, truth) = [lines(s) for s in range(4)], lines(99)
    dice = {}
    for size in (64, 128):
        pred = InContextSegmenter.from_pretrained(size=size).segment(query, support=support) >= 0.5
        dice[size] = 2 * np.logical_and(pred, truth > 0).sum() / (pred.sum() + (truth > 0).sum())
    assert dice[128] > 0.6 and dice[128] > dice[64] + 0.3, dice
