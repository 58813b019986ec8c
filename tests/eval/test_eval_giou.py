"""GIoU in strict grounding: the proof that a metric is one edit inside its scorer (strict_rec)."""

from __future__ import annotations

import pytest

from medground.eval.report import tables
from medground.eval.rows import PredRow
from medground.eval.stats import BootstrapConfig
from medground.eval.strict import evaluate_strict, giou, strict_rec
from medground.types import Box

NO_CI = BootstrapConfig(replicates=0)


def _row(annotation: str, response: str, line: int = 1) -> PredRow:
    """A BiRD row: qwen-vl grid corners on 1000 x 1000, inclusive, so (0,0),(9,9) is Box(0, 0, 10, 10)."""
    return PredRow(str(line), f"ct_{line}.png", "ct", "ct", "rec", "q", annotation, response, "bird", line)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),  # equal
        ((0, 0, 10, 10), (5, 0, 15, 10), 1 / 3),  # inter 50, union 150, hull 150
        ((0, 0, 10, 10), (20, 0, 30, 10), -1 / 3),  # inter 0, union 200, hull 300: 0 - 100/300
        ((0, 0, 10, 10), (90, 0, 100, 10), -0.8),  # farther apart, lower: 0 - 800/1000
        ((0, 0, 10, 10), (2, 2, 4, 4), 0.04),  # inside: hull = union, GIoU = IoU = 4/100
    ],
)
def test_giou_by_hand(a, b, expected):
    assert giou(Box(*a), Box(*b)) == pytest.approx(expected)
    assert giou(Box(*b), Box(*a)) == pytest.approx(expected)


def test_mean_giou_matches_one_to_one_and_scores_a_missed_box_minus_one():
    # truth: two boxes; one prediction overlapping the first by half. GIoU with the first 1/3, with the
    # second (hull 5..30 = 250, union 200) -0.2: the assignment takes 1/3, the second box scores -1
    two = _row("<box>(0,0),(9,9)</box><box>(20,0),(29,9)</box>", "<box>(5,0),(14,9)</box>", 1)
    # a far miss still ranks below a near miss, where IoU gives both 0
    far = _row("<box>(0,0),(9,9)</box>", "<box>(90,0),(99,9)</box>", 2)
    near = _row("<box>(0,0),(9,9)</box>", "<box>(20,0),(29,9)</box>", 3)
    result = strict_rec([two, far, near], NO_CI)
    assert [item["giou_sum"] for item in result["items"]] == pytest.approx([1 / 3 - 1, -0.8, -1 / 3])
    assert [item["iou_sum"] for item in result["items"]] == pytest.approx([1 / 3, 0, 0])
    assert result["micro"]["mean_giou"] == pytest.approx((1 / 3 - 1 - 0.8 - 1 / 3) / 4)


def test_mean_giou_reaches_the_report_without_an_edit_outside_its_scorer():
    rows = [_row("<box>(0,0),(9,9)</box>", "<box>(0,0),(9,9)</box>")]
    result = {"protocol": "strict", "tasks": evaluate_strict(rows, NO_CI)}
    first = tables(result)[0]
    assert first.header[2:] == ["precision@0.5", "recall@0.5", "f1@0.5", "mean_iou", "mean_giou"]
    assert first.rows[-3][-1] == "1.0000"  # the micro row: a perfect box has GIoU 1
