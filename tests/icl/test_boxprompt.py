"""Segment from a box: geometry, baselines, the facade with a box, the CLI, the shipped weights, training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from icl_helpers import FakeTextEncoder, disc
from PIL import Image
from typer.testing import CliRunner

from medground.icl.boxprompt import (
    BoxSeg,
    BoxSegConfig,
    box_ellipse,
    box_fill,
    box_grabcut,
    box_inputs,
    check_box,
    crop_window,
    load_boxseg,
    paste_back,
    segment_boxes,
)
from medground.icl.boxtrain import jitter_box, load_box_data, train_boxseg
from medground.icl.commands import app
from medground.icl.segmenter import InContextSegmenter


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="module")
def shipped() -> BoxSeg:
    return load_boxseg()


def _disc_image() -> tuple[np.ndarray, np.ndarray, list[int]]:
    """A 96 x 128 gray image with a bright disc (radius 15 at x=45, y=60) on a textured background."""
    rng = np.random.default_rng(0)
    truth = disc(96, 128, 60, 45, 15)
    image = (40 + 15 * rng.standard_normal((96, 128)) + 160 * truth).clip(0, 255).astype(np.uint8)
    return image, truth, [30, 45, 61, 76]  # tight box of the disc: x 30..60, y 45..75 inclusive


# ---------------------------------------------------------------------------- geometry and baselines
def test_ellipse_of_a_4x6_box_by_hand() -> None:
    expected = np.zeros((10, 10), bool)
    expected[1, 3:5] = expected[6, 3:5] = True  # top/bottom rows: only the two middle pixel centres
    expected[2:6, 2:6] = True
    np.testing.assert_array_equal(box_ellipse((2, 1, 6, 7), 10, 10), expected)
    assert box_fill((2, 1, 6, 7), 10, 10).sum() == 24 and box_fill((2, 1, 6, 7), 10, 10)[1:7, 2:6].all()


def test_grabcut_recovers_a_flat_square_inside_its_box() -> None:
    image = np.full((60, 60, 3), 30, np.uint8)
    image[20:40, 15:45] = (200, 180, 40)
    truth = np.zeros((60, 60), bool)
    truth[20:40, 15:45] = True
    assert _dice(box_grabcut(image, (12, 17, 48, 43)), truth) > 0.95
    assert box_grabcut(image, (0, 0, 60, 60)).all()  # no background to learn from: the filled box


def test_check_box_and_crop_window() -> None:
    assert check_box([1, 2, 30, 40], 40, 30) == (1, 2, 30, 40)
    for bad in ([0, 0, 31, 10], [-1, 0, 5, 5], [5, 5, 5, 9], [1, 2, 3], "abc"):
        with pytest.raises(ValueError, match="box"):
            check_box(bad, 40, 30)
    # box 10 x 20 at (10, 10): margin 20% -> 2 px / 4 px, plus pad 4 px per side
    assert crop_window((10, 10, 20, 30), 0.2, 4) == (4, 2, 26, 38)


def test_inputs_and_paste_back_frames() -> None:
    cfg = BoxSegConfig(size=32, widths=(4, 8))
    rgb = np.zeros((50, 40, 3), np.float32)
    x, window = box_inputs(rgb, (0, 0, 10, 10), cfg)
    assert x.shape == (7, 32, 32) and window == (-6, -6, 16, 16)
    # the box covers window pixels 6..16 of 22 -> columns from 32 * 6 / 22 = 8.7 to the end
    assert x[3, 16, 20] == 1 and x[3, 16, 4] == 0 and float(x[5:].abs().sum()) == 0
    # ellipse centre (5, 5), radii 5: S-pixel 9 has its centre at -6 + 9.5 * 22 / 32 = 0.53 px, so
    # (9, 9) is in the box but outside the ellipse ((0.53 - 5)^2 / 25 * 2 = 1.6), (16, 9) inside (0.80)
    assert x[3, 9, 9] == 1 and x[4, 9, 9] == 0 and x[4, 16, 9] == 1 and x[4, 16, 16] == 1
    assert x[4, 16, 4] == 0  # left of the box
    prior = np.ones((50, 40), np.float32)
    x, _ = box_inputs(rgb, (0, 0, 10, 10), cfg, prior)
    assert float(x[6].min()) == 1 and float(x[5, 31, 31]) == pytest.approx(1)
    prob = paste_back(torch.full((32, 32), 10.0), (30, 40, 50, 60), 50, 40)
    assert (
        prob.shape == (50, 40)
        and prob[40:, 30:].min() > 0.99
        and prob[:40].max() == 0
        and prob[:, :30].max() == 0
    )


def test_jitter_stays_in_the_image_and_within_ten_percent() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        x0, y0, x1, y1 = jitter_box((10, 20, 60, 40), 45, 70, 0.1, rng)
        assert 0 <= x0 < x1 <= 70 and 0 <= y0 < y1 <= 45
        assert abs(x0 - 10) <= 5 and abs(x1 - 60) <= 5 and abs(y0 - 20) <= 2 and abs(y1 - 40) <= 2


# ---------------------------------------------------------------------------- facade and CLI
def test_facade_box_alone(segmenter: InContextSegmenter, shipped: BoxSeg) -> None:
    segmenter._box_model, segmenter.box_engine = shipped, "boxseg"
    image, _, box = _disc_image()
    prob = segmenter.segment(image, box=box)
    assert prob.shape == (96, 128) and prob.dtype == np.float32
    assert prob.min() >= 0 and prob.max() <= 1
    x0, y0, x1, y1 = crop_window(tuple(box), 0.2, 4)
    assert prob[:, x1:].max() == 0 and prob[:y0].max() == 0  # zero far outside the box
    two = segmenter.segment([image, image[:, ::-1]], box=[box, [128 - box[2], box[1], 128 - box[0], box[3]]])
    assert len(two) == 2 and two[1].shape == (96, 128)
    with pytest.raises(ValueError, match=r"box of query 0 .*outside the 128x96"):
        segmenter.segment(image, box=[100, 10, 140, 30])
    with pytest.raises(ValueError, match="2 boxes"):
        segmenter.segment([image, image], box=box)


def test_facade_box_with_supports_and_text(segmenter: InContextSegmenter, shipped: BoxSeg) -> None:
    segmenter._box_model, segmenter.box_engine = shipped, "boxseg"
    image, truth, box = _disc_image()
    both = segmenter.segment(image, support=[(image, truth)], box=box)
    text = segmenter.segment(image, text="disc", box=box)
    for prob in (both, text):
        assert prob.shape == (96, 128) and prob.min() >= 0 and prob.max() <= 1


def test_shipped_weights_recover_a_disc_from_its_box(shipped: BoxSeg) -> None:
    image, truth, box = _disc_image()
    seg = InContextSegmenter(
        BoxSeg(BoxSegConfig(size=32, widths=(4, 8))),
        FakeTextEncoder(),
        box_model=shipped,
        box_engine="boxseg",
    )
    assert _dice(seg.segment(image, box=box) >= 0.5, truth) > 0.8
    loose = [box[0] - 3, box[1] + 2, box[2] + 3, box[3] - 2]  # a user's imprecise box
    assert _dice(seg.segment(image, box=loose) >= 0.5, truth) > 0.7


def test_cli_segment_with_a_box_writes_the_mask(tmp_path: Path) -> None:
    image, truth, box = _disc_image()
    Image.fromarray(image).save(tmp_path / "q.png")
    result = CliRunner().invoke(
        app,
        [
            "segment",
            "--query",
            str(tmp_path / "q.png"),
            "--out",
            str(tmp_path / "o"),
            "--box",
            ",".join(map(str, box)),
        ],
    )
    assert result.exit_code == 0, result.output
    mask = np.asarray(Image.open(tmp_path / "o/q.png")) > 0
    assert mask.shape == (96, 128) and _dice(mask, truth) > 0.8
    bad = CliRunner().invoke(
        app, ["segment", "--query", str(tmp_path / "q.png"), "--out", str(tmp_path / "o"), "--box", "1,2,3"]
    )
    assert bad.exit_code != 0 and "x0,y0,x1,y1" in bad.output
    outside = CliRunner().invoke(
        app,
        ["segment", "--query", str(tmp_path / "q.png"), "--out", str(tmp_path / "o2"), "--box", "0,0,500,50"],
    )
    assert outside.exit_code == 2  # a one-line error, not a traceback
    assert "outside the 128x96 (WxH) image" in outside.output and not (tmp_path / "o2/q.png").exists()


# ---------------------------------------------------------------------------- training
def test_training_on_engine_regions_saves_a_loadable_model(engine_dir: Path, tmp_path: Path) -> None:
    data = load_box_data(engine_dir)
    assert len(data.images) == 3 and len(data.examples) == 6  # 2 + 1 hip_left instances, 2 liver
    first = next(e for e in data.examples if e.key == "hip_left")
    assert first.box == (6, 6, 15, 15)  # disc at (10, 10), radius 4: rows/cols 6..14
    summary = train_boxseg(
        data, tmp_path / "m", steps=2, batch=4, config=BoxSegConfig(size=32, widths=(4, 8))
    )
    assert summary["steps"] == 2 and summary["trained_sources"] == ["demo"]
    assert json.loads((tmp_path / "m/train.json").read_text())["splits"] == "all"
    model = load_boxseg(tmp_path / "m")
    assert model(torch.zeros(1, 7, 32, 32)).shape == (1, 1, 32, 32)


def test_training_data_keeps_only_the_asked_splits_and_reads_rle_regions(
    engine_dir: Path, tmp_path: Path
) -> None:
    """Shipped weights train on train + val only; an RLE build (`--masks rle`) gives the same examples."""
    import pycocotools.mask as mask_utils

    shard = engine_dir / "records/shard-00000.jsonl"
    records = [json.loads(line) for line in shard.read_text().splitlines()]
    for record, split in zip(records, ["train", "test", "val"], strict=True):
        record["split"] = split
        for region in record["regions"]:  # RLE written by pycocotools itself, the PNG file removed
            png = engine_dir / region.pop("mask")
            mask = np.asfortranarray((np.asarray(Image.open(png)) > 0).astype(np.uint8))
            rle = mask_utils.encode(mask)
            region["rle"] = {"size": rle["size"], "counts": rle["counts"].decode()}
            png.unlink()
    shard.write_text("".join(json.dumps(r) + "\n" for r in records))
    kept = load_box_data(engine_dir, splits=["train", "val"])
    assert kept.image_files == ["images/demo/img0.png", "images/demo/img2.png"]
    assert [e.key for e in kept.examples] == ["hip_left", "hip_left", "liver", "hip_left"]
    assert next(e for e in kept.examples if e.key == "hip_left").box == (6, 6, 15, 15)
    assert len(load_box_data(engine_dir).images) == 3
    # the weights' card says which splits they saw (the shipped ones must not see test)
    summary = train_boxseg(
        kept, tmp_path / "m", steps=1, batch=2, config=BoxSegConfig(size=32, widths=(4, 8))
    )
    assert summary["splits"] == ["train", "val"]
    assert json.loads((tmp_path / "m/train.json").read_text())["splits"] == ["train", "val"]


def test_an_untrained_box_model_returns_the_inscribed_ellipse() -> None:
    """The network learns a correction to the ellipse: at initialisation its mask is the ellipse baseline."""
    torch.manual_seed(0)
    model = BoxSeg(BoxSegConfig(size=64, widths=(4, 8))).eval()
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    box = (30, 20, 130, 80)
    pred = segment_boxes(model, image, [box])[0] >= 0.5
    ellipse = box_ellipse(box, 120, 160)
    overlap = 2 * np.logical_and(pred, ellipse).sum() / (pred.sum() + ellipse.sum())
    # one 64-grid cell is (100 + 2 * 24) / 64 = 2.3 px wide here: the edge may move by that much
    assert overlap > 0.97 and not pred[:, :27].any() and not pred[:17].any() and not pred[:, 133:].any()


def test_a_version_1_box_model_folder_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="version 1.*retrain"):
        BoxSegConfig(version=1)


def test_training_leaves_out_regions_that_barely_fill_their_box(engine_dir: Path, tmp_path: Path) -> None:
    """A vessel-tree-like region (a thin cross: 17 of 81 pixels of its box, 0.21) is not trained on."""
    data = load_box_data(engine_dir)
    sparse = data.examples[0]
    sparse.mask = np.zeros((9, 9), bool)
    sparse.mask[4, :] = sparse.mask[:, 4] = True
    summary = train_boxseg(
        data, tmp_path / "m", steps=1, batch=2, config=BoxSegConfig(size=32, widths=(4, 8))
    )
    assert summary["regions_left_out_as_sparse"] == 1 and summary["min_fill"] == 0.25
