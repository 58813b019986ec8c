from medground.mllm.baselines import (
    dataset_majority_classes,
    evaluate_predictions,
    majority_class,
    prior_box_for,
    prior_boxes,
    roc_label,
    turn_hits,
)
from medground.types import Box


def _record(rid, split, w, h, boxes, turns):
    return {
        "id": rid,
        "split": split,
        "width": w,
        "height": h,
        "regions": [{"name": n, "box": b} for n, b in boxes],
        "turns": turns,
    }


TRAIN = [
    _record(
        "a",
        "train",
        100,
        100,
        [("liver", [0, 0, 50, 50])],
        [{"task": "roc", "structure": "liver", "regions": [0]}],
    ),
    _record(
        "b",
        "train",
        200,
        100,
        [("liver", [100, 50, 200, 100]), ("lung", [0, 0, 10, 10])],
        [
            {"task": "roc", "structure": "liver", "regions": [0]},
            {"task": "roc", "structure": "lung", "regions": [1]},
        ],
    ),
]


def _liver_lung_test_record(*extra_turns):
    """Test record "t": liver [20, 20, 80, 80) and lung [0, 0, 10, 10) on 100 x 100; turns: REC liver,
    ROC lung, a negative REC (heart), then ``extra_turns``."""
    turns = [
        {"task": "rec", "structure": "liver", "regions": [0], "negative": False},
        {"task": "roc", "structure": "lung", "regions": [1], "negative": False},
        {"task": "rec", "structure": "heart", "regions": [], "negative": True},
        *extra_turns,
    ]
    return _record("t", "test", 100, 100, [("liver", [20, 20, 80, 80]), ("lung", [0, 0, 10, 10])], turns)


def test_prior_box_is_the_mean_normalised_training_box():
    # liver: (0, 0, .5, .5) and (.5, .5, 1, 1) -> mean (.25, .25, .75, .75)
    priors = prior_boxes(TRAIN)
    assert priors["liver"] == (0.25, 0.25, 0.75, 0.75)
    assert prior_box_for(priors, "liver", 40, 20) == Box(10, 5, 30, 15)
    # unseen: mean of liver (.25,.25,.75,.75) and lung (0,0,.05,.1) = (.125, .125, .4, .425)
    assert prior_box_for(priors, "heart", 100, 100) == Box(12, 12, 40, 42)


def test_majority_and_roc_label():
    assert majority_class(TRAIN) == "liver"
    vocab = ["liver", "left lung", "lung"]
    assert roc_label("It is the left lung, not the liver.", vocab) == "left lung"
    assert roc_label("Deliverance", vocab) is None


def test_evaluate_scores_model_and_baselines_on_the_same_turns():
    test = [_liver_lung_test_record()]
    rows = [
        {"record": "t", "turn": 0, "response": "", "boxes": [{"label": "liver", "box": [20, 20, 80, 79]}]},
        {"record": "t", "turn": 1, "response": "It is the lung."},
        {"record": "t", "turn": 2, "response": "No heart here."},
    ]
    result = evaluate_predictions(rows, test, TRAIN)
    # prior liver box on 100x100: [25, 25, 75, 75): IoU with [20, 20, 80, 80) = 2500 / 3600 = 0.69 -> hit
    assert (
        result["rec_turns"] == 1 and result["rec_acc50_model"] == 1.0 and result["rec_acc50_prior_box"] == 1.0
    )
    assert result["roc_turns"] == 1 and result["roc_acc_model"] == 1.0 and result["roc_acc_majority"] == 0.0


def test_roc_label_reads_names_as_the_strict_protocol_spells_them():
    vocab = ["kidney", "left kidney", "cell nuclei", "dental caries"]
    assert roc_label("These are the Left Kidneys.", vocab) == "left kidney"  # longest at the first position
    assert roc_label("One cell nucleus.", vocab) == "cell nuclei"  # nuclei -> nucleus on both sides
    assert roc_label("dental caries", vocab) == "dental caries"
    assert roc_label("a kidney-shaped dental caries", vocab) == "kidney"  # the first one wins
    assert roc_label("kidneystone", vocab) is None


def test_multi_structure_roc_is_scored_against_each_datasets_own_majority():
    """Only images with >= 2 distinct structures count; dataset "us" answers "nerve" (2 of its 3 training
    ROC turns), dataset "ct" answers "liver", a dataset unseen in training the overall majority."""

    def rec(rid, source, names, asked):
        r = _record(rid, "x", 100, 100, [(n, [0, 0, 10, 10]) for n in names], [])
        r["source"] = source
        r["turns"] = [{"task": "roc", "structure": s, "regions": [names.index(s)]} for s in asked]
        return r

    train = [
        rec("u1", "us", ["nerve", "vessel"], ["nerve", "vessel"]),
        rec("u2", "us", ["nerve"], ["nerve"]),
        rec("c1", "ct", ["liver"], ["liver"]),
        rec("c2", "ct", ["liver", "lung"], ["liver", "lung", "liver"]),
    ]
    assert majority_class(train) == "liver"  # liver 3, nerve 2
    assert dataset_majority_classes(train) == {"us": "nerve", "ct": "liver"}
    test = [
        rec("t1", "us", ["nerve", "vessel"], ["nerve", "vessel"]),  # own majority: 1 of 2
        rec("t2", "us", ["nerve"], ["nerve"]),  # one structure: not in the multi-structure score
        rec("t3", "new", ["polyp", "liver"], ["polyp", "liver"]),  # unseen dataset: overall "liver", 1 of 2
    ]
    answers = {
        ("t1", 0): "nerve",
        ("t1", 1): "nerve",
        ("t2", 0): "nerve",
        ("t3", 0): "a polyp",
        ("t3", 1): "?",
    }
    rows = [{"record": r, "turn": t, "response": a} for (r, t), a in answers.items()]
    result = evaluate_predictions(rows, test, train)
    assert result["roc_turns"] == 5 and result["roc_acc_model"] == 3 / 5
    assert result["roc_multi_turns"] == 4
    assert result["roc_multi_acc_model"] == 2 / 4  # t1/0 nerve, t3/0 polyp
    assert result["roc_multi_acc_dataset_majority"] == 2 / 4  # t1/0 nerve, t3/1 liver


def test_turn_hits_are_the_per_row_scores_that_sum_to_the_evaluation():
    """One row per turn, in row order: the REC row hits for model and prior, the ROC row (lung on a
    two-structure image, no source: own majority = overall "liver") hits for the model only, the
    negative turn and an unscored task are all-zero rows."""
    test = [_liver_lung_test_record({"task": "mia", "regions": []})]
    rows = [
        {"record": "t", "turn": 2, "response": "No heart here."},
        {"record": "t", "turn": 0, "response": "", "boxes": [{"label": "liver", "box": [0, 0, 30, 30]}]},
        {"record": "t", "turn": 1, "response": "It is the lung."},
        {"record": "t", "turn": 3, "response": "A CT."},
    ]
    hits = turn_hits(rows, test, TRAIN)
    # model box [0,0,30,30) vs [20,20,80,80): IoU 100 / 4400 -> miss; prior [25,25,75,75) -> hit (0.69)
    expected = {
        "rec": [0, 1, 0, 0],
        "rec_model": [0, 0, 0, 0],
        "rec_prior": [0, 1, 0, 0],
        "roc": [0, 0, 1, 0],
        "roc_model": [0, 0, 1, 0],
        "roc_majority": [0, 0, 0, 0],
        "roc2": [0, 0, 1, 0],
        "roc2_model": [0, 0, 1, 0],
        "roc2_majority": [0, 0, 0, 0],
    }
    assert {k: v.tolist() for k, v in hits.items()} == expected
    result = evaluate_predictions(rows, test, TRAIN)
    assert result["rec_acc50_model"] == 0.0 and result["rec_acc50_prior_box"] == 1.0
    assert result["roc_multi_turns"] == 1 and result["roc_multi_acc_model"] == 1.0
