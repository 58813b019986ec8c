import numpy as np
import pytest

from medground.types import Box, tight_box


def test_tight_box_is_exclusive_on_the_right_and_bottom():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True  # rows 2..4, columns 3..8
    assert tight_box(mask) == Box(3, 2, 9, 5)


def test_single_pixel_box_has_size_one():
    mask = np.zeros((4, 4), bool)
    mask[3, 0] = True
    box = tight_box(mask)
    assert box == Box(0, 3, 1, 4) and box.area == 1


def test_empty_mask_has_no_box():
    assert tight_box(np.zeros((5, 5), bool)) is None


def test_box_rejects_degenerate_and_negative():
    with pytest.raises(ValueError):
        Box(3, 3, 3, 5)
    with pytest.raises(ValueError):
        Box(-1, 0, 2, 2)
    with pytest.raises(TypeError):
        Box(0.5, 0, 2, 2)


def test_iou_by_hand():
    a, b = Box(0, 0, 4, 4), Box(2, 2, 6, 6)
    # intersection 2x2 = 4, union 16 + 16 - 4 = 28
    assert a.iou(b) == pytest.approx(4 / 28)
    assert a.iou(a) == 1.0
    assert a.iou(Box(10, 10, 11, 11)) == 0.0


def test_one_turn_type_from_the_engine_to_training():
    """The engine writes Turns and training reads the same Turn type back, fields intact (mia: no structure)."""
    from medground.data.generators import TaskConfig
    from medground.data.generators import Turn as TaskTurn
    from medground.data.records import RecordConfig, make_records
    from medground.grounding import get_dialect
    from medground.mllm.data import record_turns
    from medground.types import Sample, StructureMask, Turn

    assert TaskTurn is Turn
    liver = np.zeros((60, 80), bool)
    liver[5:30, 10:50] = True
    spleen = np.zeros((60, 80), bool)
    spleen[35:55, 55:75] = True
    sample = Sample(
        "s1",
        np.full((60, 80), 90, np.uint8),
        "ct",
        "demo",
        "p1",
        [StructureMask("liver", liver), StructureMask("spleen", spleen)],
        plane="axial",
        body_region="abdomen",
    )
    config = RecordConfig(conversations_per_image=4, tasks=TaskConfig(mia_rate=1.0))
    records, _, rejected = make_records(sample, ["liver", "spleen"], config)
    assert records and not rejected
    seen_mia = False
    for record in records:
        turns = record_turns(record, get_dialect(record["dialect"]))
        convs = record["conversations"]
        expected = [
            Turn(
                meta["task"],
                convs[2 * i]["value"].removeprefix("<image>\n"),
                convs[2 * i + 1]["value"],
                meta["regions"],
                meta["structure"],
                meta["negative"],
            )
            for i, meta in enumerate(record["turns"])
        ]
        assert turns == expected
        assert all(isinstance(t, Turn) for t in turns)
        for turn in turns:
            if turn.task == "mia":
                seen_mia = True
                assert turn.structure is None and turn.regions == [0, 1]
            else:
                assert turn.structure in ("liver", "spleen") or turn.negative
    assert seen_mia
