"""BiRD protocol on hand-made rows; every expected number is worked out by hand below."""

import pytest

from medground.eval.bird import bird_box_iou, bird_roc, bird_vg
from medground.eval.report import markdown
from medground.eval.rows import PredRow, bird_modality_key
from medground.modalities import medgrit_modality

EPS = 1e-8  # BiRD divides by (count + 1e-8)


def row(image, annotation, response, task="rec", line=1):
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
        # skipped: annotation without a box
        row("ct_6.png", "There is no liver.", box(0, 0, 10, 10), line=6),
        # a modality outside the eight: counted as "other", not in the mean
        row("histo_7.png", box(0, 0, 10, 10), box(0, 0, 10, 10), line=7),
    ]
    result = bird_vg(rows)
    expected = {"ct": 3 / (3 + EPS), "mr": 1 / (2 + EPS), "x": 0.0}
    for modality, score in result["per_modality"].items():
        assert score == pytest.approx(expected.get(modality, 0.0), abs=0, rel=1e-15)
    assert result["mean"] == pytest.approx((3 / (3 + EPS) + 1 / (2 + EPS)) / 8, rel=1e-15)
    assert result["counts"]["ct"] == {"found": 3, "targets": 3}
    assert [s["line"] for s in result["skipped"]] == [6]
    assert result["other"] == {
        "modalities": {"histo": 1},
        "score": 1 / (1 + EPS),
        "counts": {"found": 1, "targets": 1},
    }


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


def flat(modality, annotation, response, task, line):
    """A medground row of any modality, mapped to BiRD's keys as the row reader maps it."""
    return PredRow(
        id=str(line),
        image=f"img{line}.png",
        modality=modality,
        bird_modality=bird_modality_key(modality),
        task=task,
        question="q",
        annotation=annotation,
        response=response,
        origin="medground",
        line=line,
    )


def test_modalities_outside_the_eight_count_as_other():
    assert [medgrit_modality(m) for m in ("x", "X-ray", "mammography", "oct", "photography", "MR")] == [
        "x-ray",
        "x-ray",
        "x-ray",
        "other",
        "other",
        "mr",
    ]
    assert [bird_modality_key(m) for m in ("x-ray", "mammography", "oct")] == ["x", "x", None]


@pytest.mark.parametrize("scorer", ["vg", "roc"])
def test_other_rows_leave_the_eight_modality_mean_unchanged(scorer):
    if scorer == "vg":
        fn, right, wrong = bird_vg, (box(0, 0, 10, 10), box(0, 0, 10, 10)), (box(0, 0, 10, 10), "nothing")
    else:
        fn, right, wrong = bird_roc, ("liver", "the liver"), ("liver", "the spleen")
    eight = [flat("ct", *right, scorer, 1), flat("fundus", *wrong, scorer, 2)]
    others = [
        flat("photography", *right, scorer, 3),
        flat("oct", *right, scorer, 4),
        flat("oct", *wrong, scorer, 5),
    ]
    alone, mixed = fn(eight), fn(eight + others)
    # by hand: ct 1/1, fundus 0/1, six empty modalities 0: mean = (1 / (1 + 1e-8)) / 8
    assert mixed["mean"] == alone["mean"] == pytest.approx((1 / (1 + EPS)) / 8, rel=1e-15)
    assert mixed["per_modality"] == alone["per_modality"] and set(mixed["per_modality"]) == set(
        ("ct", "mr", "x", "pet", "endoscopy", "dermoscopy", "fundus", "ultrasound")
    )
    assert alone["other"] is None
    assert mixed["other"]["modalities"] == {"oct": 2, "photography": 1}
    assert mixed["other"]["score"] == pytest.approx(2 / (3 + EPS), rel=1e-15)  # 2 of the 3 other rows right
    assert [i["modality"] for i in mixed["items"]][2:] == ["other", "other", "other"]
    assert not mixed["skipped"]
    text = markdown({"protocol": "bird", "tasks": {scorer: mixed}})
    assert "| other (not in the mean) | 0.666667 | 2 | 3 |" in text
    assert "counted as 'other': oct (2 rows), photography (1 rows)" in text
