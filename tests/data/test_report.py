"""Tests of the build report: counts in the HTML, deterministic output, and exact box/mask drawing pixels."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from PIL import Image

from medground.data.report import TILE, write_report
from medground.types import Box
from medground.viz import PALETTE, draw_boxes, fill_masks

try:
    from _records_fixture import RECORD_IDS, build_output
except ImportError:  # tests/ laid out as packages
    from tests.data._records_fixture import RECORD_IDS, build_output

PLOTS = [
    "modality.png",
    "tasks.png",
    "splits.png",
    "box_sizes.png",
    "regions_per_image.png",
    "skipped.png",
    "overlays.png",
]


def _row(*cells: object) -> str:
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def test_report_files_and_counts(tmp_path):
    root = build_output(tmp_path / "out")
    page = write_report(root)
    assert page == root / "report" / "report.html"
    for name in PLOTS:
        assert (root / "report" / name).stat().st_size > 0
        assert f"src='{name}'" in page.read_text()
    text = page.read_text()
    # by hand from the fixture: ct = a (2 regions) + b (1 region); fundus = c (1 region)
    assert _row("ct", 2, 3) in text
    assert _row("fundus", 1, 1) in text
    assert _row("rec", 2, 1) in text and _row("roc", 1, 0) in text and _row("mia", 1, 0) in text
    assert _row("train", 2) in text and _row("val", 1) in text
    assert _row(1, 2) in text and _row(2, 1) in text  # images by number of regions
    assert _row("empty mask", 2) in text and _row("unreadable image", 1) in text
    assert _row(3, 4, 5, 3) in text  # records, regions, turns, skipped
    assert "x/1.png" in text and "demo_fundus" in text  # skipped lines and manifest


def test_report_is_deterministic(tmp_path):
    root = build_output(tmp_path / "out")
    write_report(root)
    first = {p.name: p.read_bytes() for p in (root / "report").iterdir()}
    write_report(root)
    second = {p.name: p.read_bytes() for p in (root / "report").iterdir()}
    assert first == second


def test_report_uses_given_records_and_overlay_grid(tmp_path):
    root = build_output(tmp_path / "out")
    overlays = root / "report" / "overlays.png"
    write_report(root)
    grid = np.asarray(Image.open(overlays))
    assert grid.shape == (TILE + 16, 3 * TILE, 3)  # 3 samples in one row, caption band of 16 px
    assert (grid == PALETTE[0]).all(axis=2).any()
    # many records of one modality: at most 12 tiles (4 x 3)
    image = root / "images" / "grey.png"
    Image.fromarray(np.full((10, 20), 90, np.uint8)).save(image)
    fake = [
        {
            "id": f"s/{i}",
            "image": "images/grey.png",
            "width": 20,
            "height": 10,
            "modality": "mr",
            "split": "test",
            "regions": [],
            "turns": [],
        }
        for i in range(30)
    ]
    page = write_report(root, records=fake)
    assert np.asarray(Image.open(overlays)).shape == (3 * (TILE + 16), 4 * TILE, 3)
    text = page.read_text()
    assert _row("mr", 30, 0) in text and not re.search(r"<td>ct</td>", text)
    assert RECORD_IDS[0] not in text and "Errors" not in text


def test_report_lists_unreadable_files_as_errors(tmp_path):
    root = build_output(tmp_path / "out")
    good = root / "images" / "grey.png"
    Image.fromarray(np.full((10, 20), 90, np.uint8)).save(good)
    (root / "images" / "broken.png").write_text("not an image")
    base = {"width": 20, "height": 10, "modality": "mr", "split": "test", "turns": []}
    records = [
        {**base, "id": "ok", "image": "images/grey.png", "regions": []},
        {**base, "id": "gone", "image": "images/none.png", "regions": []},
        {**base, "id": "broken", "image": "images/broken.png", "regions": []},
        {
            **base,
            "id": "nomask",
            "image": "images/grey.png",
            "regions": [{"name": "liver", "box": [1, 1, 5, 5], "mask": "masks/none.png"}],
        },
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        page = write_report(root, records=records)
    said = sorted(str(w.message).split(":")[:2] for w in caught)
    assert said == [["report", " record broken"], ["report", " record gone"], ["report", " record nomask"]]
    text = page.read_text()
    assert "Errors: 3 file(s)" in text
    errors = text[text.index("id='errors'") :]
    assert _row("gone", root / "images" / "none.png", "file not found") in errors.replace(
        "; check the path (relative paths start at the working directory)", ""
    )
    assert "<td>broken</td>" in errors and "not a readable image" in errors
    assert "<td>nomask</td>" in errors and "masks/none.png" in errors
    # one readable record: one tile, no grey placeholder tiles for the others
    grid = np.asarray(Image.open(root / "report" / "overlays.png"))
    assert grid.shape == (TILE + 16, TILE, 3)


def test_draw_boxes_exact_pixels():
    image = np.full((30, 40), 7, np.uint8)
    out = draw_boxes(image, [[5, 6, 20, 18]], thickness=2)
    red = np.array(PALETTE[0], np.uint8)
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    expected = np.full((30, 40, 3), 7, np.uint8)
    expected[6:8, 5:20] = red  # top rows 6, 7
    expected[16:18, 5:20] = red  # bottom rows 16, 17 (y1 = 18 exclusive)
    expected[6:18, 5:7] = red  # left columns 5, 6
    expected[6:18, 18:20] = red  # right columns 18, 19 (x1 = 20 exclusive)
    np.testing.assert_array_equal(out, expected)
    assert (image == 7).all()  # input untouched
    np.testing.assert_array_equal(draw_boxes(image, [Box(5, 6, 20, 18)], thickness=2), expected)


def test_draw_boxes_colours_labels_and_clipping():
    image = np.zeros((40, 60, 3), np.uint8)
    colors = [(255, 0, 0), (0, 0, 255)]
    out = draw_boxes(
        image, [[10, 20, 30, 35], [0, 0, 80, 10]], labels=["liver", "spleen"], colors=colors, thickness=1
    )
    assert tuple(out[34, 20]) == (255, 0, 0)  # bottom edge of box 0
    assert tuple(out[9, 59]) == (0, 0, 255)  # box 1 clipped to the image: right column 59, bottom row 9
    assert tuple(out[1, 1]) == (0, 0, 255)  # no room above box 1: its tag starts inside, under the top edge
    assert (out[5:9, 50:58] == 0).all()  # inside box 1, right of its tag: untouched
    above = out[:20, 10:40]
    assert (above == (255, 0, 0)).all(axis=2).any()  # label tag of box 0 sits above row 20
    assert (out[21:34, 11:29] == 0).all()  # box 0 interior untouched
    with pytest.raises(ValueError, match="uint8"):
        draw_boxes(image.astype(np.float32), [[0, 0, 1, 1]])


def test_fill_masks_blend():
    image = np.full((4, 5), 100, np.uint8)
    mask = np.zeros((4, 5), bool)
    mask[1:3, 2:4] = True
    out = fill_masks(image, [mask], alpha=0.4)
    # 0.6 * 100 + 0.4 * (230, 25, 75)
    assert tuple(out[1, 2]) == (152, 70, 90)
    assert tuple(out[0, 0]) == (100, 100, 100)
    with pytest.raises(ValueError, match="shape"):
        fill_masks(image, [np.zeros((3, 3), bool)])


def test_report_without_manifest_or_skipped(tmp_path):
    root = build_output(tmp_path / "out")
    (root / "manifest.json").unlink()
    (root / "skipped.jsonl").unlink()
    text = write_report(root).read_text()
    assert "<h2>Manifest</h2>" not in text and _row(3, 4, 5, 0) in text
    assert (root / "report" / "skipped.png").exists()
