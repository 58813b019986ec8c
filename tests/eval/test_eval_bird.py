"""BiRD protocol on hand-made rows; every expected number is worked out by hand below."""

import pytest

from medground.eval.bird import bird_box_iou, bird_roc, bird_vg
from medground.eval.rows import PredRow

EPS = 1e-8  # BiRD divides by (count + 1e-8)


def row(image, annotation, response, task="vg", line=1):
    prefix = image.split("_")[0]
    known = prefix in ("ct", "mr", "x", "pet", "endoscopy", "dermoscopy", "fundus", "ultrasound")
    return PredRow(
        id=str(line),
        image=image,
        modality=prefix,
        bird_modality=prefix if known else None,
        task=task,
        question="q",
        annotation=annotation,
        response=response,
        origin="bird",
        line=line,
    )


def box(x0, y0, x1, y1):
    return f"<box>({x0},{y0}),({x1},{y1})</box>"


def test_iou_without_plus_one():
    # 90 x 90 overlap inside a 100 x 100 target, predicted box inside it: 8100 / 10000
    assert bird_box_iou("(110,110),(200,200)", "(100,100),(200,200)") == pytest.approx(0.81)
    assert bird_box_iou("(0,0),(100,50)", "(0,0),(100,100)") == pytest.approx(0.5)


def test_parse_errors_give_zero():
    assert bird_box_iou("(0,0),(abc,10)", "(0,0),(10,10)") == 0.0
    assert bird_box_iou("(0,0),(1,2,3)", "(0,0),(10,10)") == 0.0  # five numbers
    assert bird_box_iou("", "(0,0),(10,10)") == 0.0


def test_vg_recall_per_modality_and_eight_modality_mean():
    rows = [
        # ct: IoU 0.81 -> found (1 of 1)
        row(
            "ct_1.png",
            "<ref>liver</ref>" + box(100, 100, 200, 200),
            "<ref>liver</ref>" + box(110, 110, 200, 200),
        ),
        # ct: one predicted box finds both targets (IoU 9025/10975 = 0.822 with each): 2 of 2
        row("ct_2.png", box(0, 0, 100, 100) + box(10, 10, 110, 110), box(5, 5, 105, 105), line=2),
        # mr: fallback format "(x,y),(x,y)" is read; IoU exactly 0.5 is not > 0.5: 0 of 1
        row("mr_3.png", box(0, 0, 100, 100), "It is at (0,0),(100,50).", line=3),
        # mr: first predicted box fails to parse (IoU 0), the second one matches: 1 of 1
        row("mr_4.png", box(0, 0, 100, 100), "<box>(0,0),(abc,10)</box>" + box(0, 0, 100, 100), line=4),
        # x: a five-number box is a parse error: 0 of 1
        row("x_5.png", box(0, 0, 10, 10), "<box>(0,0),(1,2,3)</box>", line=5),
        # skipped: annotation without a box; modality outside the eight
        row("ct_6.png", "There is no liver.", box(0, 0, 10, 10), line=6),
        row("histo_7.png", box(0, 0, 10, 10), box(0, 0, 10, 10), line=7),
    ]
    result = bird_vg(rows)
    expected = {"ct": 3 / (3 + EPS), "mr": 1 / (2 + EPS), "x": 0.0}
    for modality, score in result["per_modality"].items():
        assert score == pytest.approx(expected.get(modality, 0.0), abs=0, rel=1e-15)
    assert result["mean"] == pytest.approx((3 / (3 + EPS) + 1 / (2 + EPS)) / 8, rel=1e-15)
    assert result["counts"]["ct"] == {"found": 3, "targets": 3}
    assert sorted(s["line"] for s in result["skipped"]) == [6, 7]


def test_vg_regularization_applies_before_parsing():
    rows = [
        # three lines: only the middle one is kept, which has the box -> found
        row("ct_1.png", box(0, 0, 100, 100), "Sure\n" + box(0, 0, 100, 100) + "\nDone"),
        # the box is on the first line, the middle line has none -> not found
        row("ct_2.png", box(0, 0, 100, 100), box(0, 0, 100, 100) + "\nit is the liver\nbye", line=2),
    ]
    result = bird_vg(rows)
    assert result["counts"]["ct"] == {"found": 1, "targets": 2}
    assert result["per_modality"]["ct"] == 1 / (2 + EPS)


def test_vg_no_modality_gives_zero_and_counts_in_mean():
    result = bird_vg([row("fundus_1.png", box(0, 0, 10, 10), box(0, 0, 10, 10))])
    assert result["mean"] == pytest.approx((1 / (1 + EPS)) / 8)
    assert result["per_modality"]["pet"] == 0.0


def test_roc_token_substring_rule():
    rows = [
        row("ct_1.png", "Left Kidney", "the left kidney.", "roc", 1),  # both tokens present
        row("ct_2.png", "liver", "Delivery", "roc", 2),  # substring, not whole word: still correct
        row("mr_3.png", "left  kidney", "kidney on the left", "roc", 3),  # empty token always matches
        row("mr_4.png", "spleen", "liver", "roc", 4),  # wrong
        row("x_5.png", "lung", "lung\nheart\nmore", "roc", 5),  # regularized to "heart": wrong
    ]
    result = bird_roc(rows)
    assert [i["correct"] for i in result["items"]] == [True, True, True, False, False]
    assert result["per_modality"]["ct"] == 2 / (2 + EPS)
    assert result["per_modality"]["mr"] == 1 / (2 + EPS)
    assert result["per_modality"]["x"] == 0.0
    assert result["mean"] == pytest.approx((2 / (2 + EPS) + 1 / (2 + EPS)) / 8, rel=1e-15)


def test_bad_target_box_raises_with_row():
    with pytest.raises(ValueError, match="line 9"):
        bird_vg([row("ct_1.png", "<box>(a,b),(c,d)</box>", box(0, 0, 1, 1), line=9)])
