from medground.mllm.baselines import (
    evaluate_predictions,
    majority_class,
    prior_box_for,
    prior_boxes,
    roc_label,
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
    test = [
        _record(
            "t",
            "test",
            100,
            100,
            [("liver", [20, 20, 80, 80]), ("lung", [0, 0, 10, 10])],
            [
                {"task": "rec", "structure": "liver", "regions": [0], "negative": False},
                {"task": "roc", "structure": "lung", "regions": [1], "negative": False},
                {"task": "rec", "structure": "heart", "regions": [], "negative": True},
            ],
        )
    ]
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
