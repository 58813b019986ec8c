"""Refer -> ground -> segment in one call: ``Grounder.ask(..., segment=True)`` and ``medground ask --segment``.

The shipped bird-nano is asked about the sample chest X-ray of the demo (held out of its training);
masks are checked as a user would: inside their box, not empty, the same pixels in the PNG file, the
COCO RLE (decoded by pycocotools) and the drawing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from pycocotools import mask as coco_mask
from typer.testing import CliRunner

from medground.demo import ASK_IMAGE, ASK_QUESTION
from medground.mllm.commands import ask_command
from medground.mllm.draw import mask_file_names
from medground.mllm.grounder import Answer, Grounder, SegmentedBox

app = typer.Typer()
app.command("ask")(ask_command)
app.command("other")(lambda: None)  # two commands, so "ask" is a subcommand as in `medground ask`
runner = CliRunner()
WIDTH, HEIGHT = 750, 734  # the sample X-ray's size (RGB PNG)


class DiscSegmenter:
    """A stand-in box-prompted segmenter: probability 0.9 inside a disc, 0.2 elsewhere (whatever the box)."""

    def __init__(self, cx: int, cy: int, r: int) -> None:
        self.cx, self.cy, self.r = cx, cy, r
        self.calls: list[tuple[tuple[int, ...], list[int] | None]] = []

    def segment(self, query: np.ndarray, box: list[int] | None = None) -> np.ndarray:
        self.calls.append((np.asarray(query).shape, box))
        yy, xx = np.mgrid[0 : query.shape[0], 0 : query.shape[1]]
        inside = (xx - self.cx) ** 2 + (yy - self.cy) ** 2 <= self.r**2
        return np.where(inside, 0.9, 0.2).astype(np.float32)


def _rle_pixels(rle: dict) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


@pytest.fixture(scope="module")
def grounder() -> Grounder:
    return Grounder.from_pretrained()


@pytest.fixture(scope="module")
def segmented(grounder: Grounder) -> Answer:
    """The demo's question with segment=True and the shipped box-prompted segmenter."""
    return grounder.ask(ASK_IMAGE, ASK_QUESTION, segment=True)


def test_each_box_gets_the_segmenters_mask_cut_to_the_box() -> None:
    model = Grounder.from_pretrained()
    disc = DiscSegmenter(cx=300, cy=300, r=200)
    model.segmenter = disc
    plain = model.ask(ASK_IMAGE, ASK_QUESTION)
    answer = model.ask(ASK_IMAGE, ASK_QUESTION, segment=True)
    assert answer.text == plain.text and len(plain.boxes) >= 1
    assert [(g.label, g.box) for g in answer.boxes] == [(g.label, g.box) for g in plain.boxes]
    assert disc.calls == [((HEIGHT, WIDTH, 3), g.box.as_list()) for g in plain.boxes]
    for g in answer.boxes:
        assert isinstance(g, SegmentedBox)
        x0, y0, x1, y1 = g.box.as_list()
        expected = np.zeros((HEIGHT, WIDTH), bool)  # the disc (p = 0.9 >= 0.5), only inside the box
        for y in range(y0, y1):
            for x in range(x0, x1):
                expected[y, x] = (x - 300) ** 2 + (y - 300) ** 2 <= 200**2
        assert g.mask.dtype == bool and g.mask.shape == (HEIGHT, WIDTH)
        assert np.array_equal(g.mask, expected)


def test_as_dict_is_unchanged_without_segment_and_adds_rle_masks_with_it(
    grounder: Grounder, segmented: Answer
) -> None:
    plain = grounder.ask(ASK_IMAGE, ASK_QUESTION).as_dict()
    assert set(plain) == {"answer", "boxes"}
    assert all(set(b) == {"label", "box"} for b in plain["boxes"])
    with_masks = segmented.as_dict()
    assert with_masks["answer"] == plain["answer"]
    assert [{"label": b["label"], "box": b["box"]} for b in with_masks["boxes"]] == plain["boxes"]
    for row, g in zip(with_masks["boxes"], segmented.boxes, strict=True):
        assert row["mask"]["size"] == [HEIGHT, WIDTH]
        assert np.array_equal(_rle_pixels(row["mask"]), g.mask)
    json.dumps(with_masks)  # JSON-ready


def test_shipped_models_segment_the_lungs_inside_their_boxes(segmented: Answer) -> None:
    assert segmented.boxes, "bird-nano boxes the lungs of the demo X-ray"
    for g in segmented.boxes:
        x0, y0, x1, y1 = g.box.as_list()
        mask = g.mask
        area = int(mask.sum())
        assert area > 0, g
        assert area == int(mask[y0:y1, x0:x1].sum()), "every mask pixel lies inside its box"
        assert area < (x1 - x0) * (y1 - y0), "a mask, not the filled box"


def test_cli_writes_mask_pngs_named_by_label_and_draws_masks(segmented: Answer, tmp_path: Path) -> None:
    masks, drawn = tmp_path / "masks", tmp_path / "drawn.png"
    args = ["ask", str(ASK_IMAGE), ASK_QUESTION, "--segment", "--masks-out", str(masks)]
    result = runner.invoke(app, [*args, "--draw", str(drawn), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(next(line for line in result.output.splitlines() if line.startswith("{")))
    names = mask_file_names([g.label for g in segmented.boxes])
    assert sorted(p.name for p in masks.iterdir()) == sorted(names)
    picture = np.asarray(Image.open(ASK_IMAGE).convert("RGB")).astype(np.float64)
    art = np.asarray(Image.open(drawn).convert("RGB"))
    colors = [(230, 25, 75), (60, 180, 75)]  # the first two colours of medground.viz.PALETTE
    for i, (g, name, row) in enumerate(zip(segmented.boxes, names, printed["boxes"], strict=True)):
        png = np.asarray(Image.open(masks / name))
        assert png.shape == (HEIGHT, WIDTH) and set(np.unique(png)) <= {0, 255}
        assert np.array_equal(png == 255, g.mask), name
        assert np.array_equal(_rle_pixels(row["mask"]), png == 255), name
        # a mask pixel well inside the box (away from the outline and label) is blended 60/40 with the colour
        x0, y0, x1, y1 = g.box.as_list()
        ys, xs = np.nonzero(g.mask[y0 + 20 : y1 - 20, x0 + 20 : x1 - 20])
        y, x = ys[len(ys) // 2] + y0 + 20, xs[len(xs) // 2] + x0 + 20
        if i < len(colors):
            blend = np.rint(0.6 * picture[y, x] + 0.4 * np.array(colors[i], np.float64))
            assert np.array_equal(art[y, x], blend.astype(np.uint8)), (name, y, x)


def test_cli_mask_options_need_segment(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ask", str(ASK_IMAGE), ASK_QUESTION, "--masks-out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--segment" in result.output


def test_mask_file_names_come_from_labels_and_are_unique() -> None:
    labels = ["both lungs", "both lungs", None, "Right lung (RL)!", "both lungs"]
    assert mask_file_names(labels) == [
        "both_lungs.png",
        "both_lungs_2.png",
        "box.png",
        "right_lung_rl.png",
        "both_lungs_3.png",
    ]


def test_cli_names_a_missing_box_model_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-box-model"
    args = ["ask", str(ASK_IMAGE), ASK_QUESTION, "--segment", "--box-model", str(missing)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "no-box-model" in result.output and "config.json" in result.output
