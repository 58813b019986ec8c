"""Strict protocol: one-to-one matching, frames, negatives, classes, absence, micro/macro, bootstrap."""

import numpy as np
import pytest

from medground.eval.matching import match_boxes
from medground.eval.rows import PredRow
from medground.eval.stats import BootstrapConfig
from medground.eval.strict import strict_absence, strict_rec, strict_roc

NO_CI = BootstrapConfig(replicates=0)


def bird(modality, annotation, response, task="rec", line=1):
    return PredRow(
        id=str(line),
        image=f"{modality}_{line}.png",
        modality=modality,
        bird_modality=modality,
        task=task,
        question="q",
        annotation=annotation,
        response=response,
        origin="bird",
        line=line,
    )


def ours(modality, annotation, response, negative=False, task="rec", structure=None, line=1, size=(200, 100)):
    return PredRow(
        id=str(line),
        image="i.png",
        modality=modality,
        bird_modality=None,
        task=task,
        question="q",
        annotation=annotation,
        response=response,
        origin="medground",
        line=line,
        width=size[0],
        height=size[1],
        negative=negative,
        dialect="qwen-vl-grid",
        structure=structure,
    )


def test_hungarian_beats_greedy():
    # greedy would take (0, 0) at 0.9 and then find nothing for pred 1; one-to-one optimum pairs both
    ious = np.array([[0.9, 0.6], [0.6, 0.0]])
    assert sorted((p, g) for p, g, _ in match_boxes(ious, 0.5)) == [(0, 1), (1, 0)]
    assert match_boxes(ious, 0.95) == []
    assert match_boxes(np.zeros((0, 3)), 0.5) == []


def test_vg_one_to_one_micro_macro():
    # qwen-vl on a 1000 x 1000 frame: "(a,b),(c,d)" -> pixels [a, c+1) x [b, d+1)
    rows = [
        # ct: one predicted box [5,105)^2 overlaps both targets with IoU 9025/10975; one-to-one: 1 tp
        bird(
            "ct", "<box>(0,0),(99,99)</box><box>(10,10),(109,109)</box>", "<box>(5,5),(104,104)</box>", line=1
        ),
        # mr: IoU exactly 0.5 (half the target) counts at 0.5 (>=), not at 0.75
        bird("mr", "<box>(0,0),(99,99)</box>", "<box>(0,0),(99,49)</box>", line=2),
        bird("mr", "<box>(0,0),(99,99)</box>", "no idea", line=3),
        bird("mr", "<box>(0,0),(99,99)</box>", "<ref>x</ref><box>(0,0),(99,99)</box>", line=4),
    ]
    result = strict_rec(rows, NO_CI)
    iou_a = 9025 / 10975
    micro = result["micro"]
    assert micro["precision@0.5"] == pytest.approx(3 / 3)
    assert micro["recall@0.5"] == pytest.approx(3 / 5)
    assert micro["f1@0.5"] == pytest.approx(2 * 1 * 0.6 / 1.6)
    assert micro["recall@0.75"] == pytest.approx(2 / 5)  # row 1 (0.82) and row 4 (1.0)
    assert micro["recall@0.25"] == pytest.approx(3 / 5)
    assert micro["mean_iou"] == pytest.approx((iou_a + 0.5 + 0 + 1.0) / 5)
    assert result["per_group"]["ct"]["recall@0.5"] == pytest.approx(1 / 2)
    assert result["per_group"]["mr"]["recall@0.5"] == pytest.approx(2 / 3)
    assert result["macro"]["recall@0.5"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_vg_uses_row_frame_and_counts_negative_boxes_as_false_positives():
    # 200 x 100 image: pixel x -> bin 5x, row y -> bin 10y. Target [0,100)^2, prediction [0,50) x [0,100)
    rows = [
        ours("x-ray", "<ref>liver</ref><box>(0,0),(495,990)</box>", "<box>(0,0),(245,990)</box>", line=1),
        ours(
            "x-ray",
            "There is no spleen in this image.",
            "<ref>spleen</ref><box>(0,0),(495,990)</box>",
            negative=True,
            line=2,
        ),
        ours("x-ray", "There is no liver here.", "The liver is not present.", negative=True, line=3),
    ]
    result = strict_rec(rows, NO_CI)
    # IoU 0.5 in pixels (on the 1000 grid it would be 246/496 < 0.5)
    assert result["micro"]["recall@0.5"] == pytest.approx(1.0)
    assert result["micro"]["precision@0.5"] == pytest.approx(1 / 2)
    assert [i["targets"] for i in result["items"]] == [1, 0, 0]


def test_vg_without_boxes_and_not_negative_is_skipped():
    result = strict_rec([bird("ct", "no box here", "<box>(0,0),(9,9)</box>")], NO_CI)
    assert result["skipped"][0]["line"] == 1 and result["micro"]["recall@0.5"] is None


def test_roc_whole_words_and_synonyms():
    rows = [
        ours("ct", "It is the left hip.", "This is the left hip.", task="roc", structure="hip_left", line=1),
        bird("ct", "liver", "Delivery", task="roc", line=2),
        bird("ct", "Kidneys", "the kidney", task="roc", line=3),
        bird("mr", "left kidney", "kidney", task="roc", line=4),
        bird("mr", "tumor", "a tumour", task="roc", line=5),
    ]
    result = strict_roc(rows, NO_CI)
    assert [i["correct"] for i in result["items"]] == [True, False, True, False, True]
    assert result["micro"]["accuracy"] == pytest.approx(3 / 5)
    assert result["per_group"]["ct"]["accuracy"] == pytest.approx(2 / 3)
    assert result["macro"]["accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_absence_detection():
    rows = [
        ours("ct", "No spleen.", "The spleen is not present in this image.", negative=True, line=1),  # tp
        ours("ct", "No spleen.", "<box>(0,0),(9,9)</box>", negative=True, line=2),  # fn
        ours("ct", "<box>(0,0),(9,9)</box>", "There is no liver.", line=3),  # fp
        ours("ct", "<box>(0,0),(9,9)</box>", "<box>(0,0),(9,9)</box>", line=4),  # tn
    ]
    result = strict_absence(rows, NO_CI)
    assert result["micro"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})
    assert "not_computed" in strict_absence([bird("ct", "a", "b")], NO_CI)


def test_bootstrap_interval_matches_direct_resampling():
    correct = [True] * 7 + [False] * 3
    rows = [
        bird("ct", "liver" if c else "spleen", "liver", task="roc", line=i) for i, c in enumerate(correct)
    ]
    config = BootstrapConfig(replicates=500, seed=3)
    ci = strict_roc(rows, config)["ci"]["accuracy"]
    rng = np.random.default_rng(3)
    stats = np.asarray(correct, dtype=float)[rng.integers(0, 10, size=(500, 10))].mean(axis=1)
    assert ci == pytest.approx([np.quantile(stats, 0.025), np.quantile(stats, 0.975)])
    assert ci[0] <= 0.7 <= ci[1]


def test_f1_is_zero_when_nothing_predicted_and_macro_counts_it():
    rows = [
        bird("ct", "<box>(0,0),(99,99)</box>", "<box>(0,0),(99,99)</box>", line=1),
        bird("mr", "<box>(0,0),(99,99)</box>", "no box", line=2),
    ]
    result = strict_rec(rows, NO_CI)
    assert result["per_group"]["mr"]["precision@0.5"] is None  # nothing predicted: undefined
    assert result["per_group"]["mr"]["f1@0.5"] == 0.0
    assert result["macro"]["f1@0.5"] == pytest.approx(0.5)
    assert result["micro"]["f1@0.5"] == pytest.approx(2 * 1 / (1 + 2))


def _image_turns(outcomes, turns=8, case=None):
    """ROC rows: image i has ``turns`` questions, all answered right (outcome 1) or all wrong (0)."""
    rows = []
    for i, ok in enumerate(outcomes):
        for t in range(turns):
            rows.append(
                PredRow(
                    id=f"{i}/{t}",
                    image=f"images/img{i}.png",
                    modality="ct",
                    bird_modality="ct",
                    task="roc",
                    question="q",
                    annotation="liver",
                    response="the liver" if ok else "the spleen",
                    origin="medground",
                    line=len(rows) + 1,
                    case=None if case is None else case(i),
                )
            )
    return rows


def _percentile_ci(values, units, replicates, seed):
    """Independent percentile bootstrap of a mean over ``units`` equally weighted values."""
    rng = np.random.default_rng(seed)
    stats = np.asarray(values, float)[rng.integers(0, units, size=(replicates, units))].mean(axis=1)
    return [np.quantile(stats, 0.025), np.quantile(stats, 0.975)]


def test_bootstrap_resamples_images_with_all_their_turns():
    outcomes = [1] * 12 + [0] * 8  # 20 images, 8 perfectly correlated turns each
    config = BootstrapConfig(replicates=2000, seed=5)
    result = strict_roc(_image_turns(outcomes), config)
    assert result["bootstrap"] == {
        "unit": "image",
        "units": 20,
        "items": 160,
        "replicates": 2000,
        "level": 0.95,
    }
    expected = _percentile_ci(outcomes, 20, 2000, 5)  # the 20 images resampled, not the 160 turns
    assert result["ci"]["accuracy"] == pytest.approx(expected)
    # statistical check: resampling the 160 turns as if independent would be about sqrt(8) times narrower
    turns = np.repeat(outcomes, 8)
    naive = _percentile_ci(turns, 160, 2000, 5)
    width, naive_width = np.diff(result["ci"]["accuracy"])[0], np.diff(naive)[0]
    assert 2.0 < width / naive_width < 4.0


def test_bootstrap_resamples_patients_when_known():
    outcomes = [1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1]  # 12 images, 2 per patient, same outcome per patient
    rows = _image_turns(outcomes, turns=3, case=lambda i: f"p{i // 2}")
    config = BootstrapConfig(replicates=1000, seed=1)
    result = strict_roc(rows, config)
    assert result["bootstrap"]["unit"] == "patient" and result["bootstrap"]["units"] == 6
    assert result["ci"]["accuracy"] == pytest.approx(_percentile_ci(outcomes[::2], 6, 1000, 1))
    # one row without a patient key: the others stay grouped by patient, that row goes by its image
    mixed = rows[:-1] + [PredRow(**{**rows[-1].__dict__, "case": None})]
    assert strict_roc(mixed, config)["bootstrap"] == {
        "unit": "patient, else image",
        "units": 7,
        "items": 36,
        "replicates": 1000,
        "level": 0.95,
    }
