import random
from dataclasses import asdict

import numpy as np
import pytest

from medground.data.generators import (
    ImageContext,
    TaskConfig,
    TaskState,
    get_task,
    make_conversation,
    mia_turn,
    negative_turn,
    rec_turn,
    reg_turn,
)
from medground.grounding import DIALECTS, get_dialect
from medground.tasks import TASKS
from medground.types import Box, Region

W, H = 258, 181
CTX = ImageContext(W, H, "ct", "axial", "pelvis", "demo")


def region(
    name: str, key: str, box: tuple[int, int, int, int], instance: int = 0, position: str = ""
) -> Region:
    b = Box(*box)
    mask = np.zeros((H, W), dtype=bool)
    mask[b.y0 : b.y1, b.x0 : b.x1] = True
    return Region(name, key, b, mask, instance, b.area, position or "in the centre of the image")


def pelvis_regions() -> list[Region]:
    return [
        region("left hip", "hip_left", (150, 40, 190, 90), 0, "on the right side of the image"),
        region("colon", "colon", (100, 20, 140, 60), 0, "in the upper central part of the image"),
        region("left hip", "hip_left", (160, 100, 200, 140), 1, "in the lower right part of the image"),
        region("right hip", "hip_right", (20, 40, 60, 90), 0, "on the left side of the image"),
        region("both lungs", "both lungs", (10, 120, 50, 170), 0, "in the lower left part of the image"),
    ]


ABSENT = ["liver", "hip_left", "spleen", "Left Hip", "urinary_bladder"]


def state(regions, absent=(), config=None, dialect="qwen-vl-grid", ctx=CTX):
    return TaskState(ctx, list(regions), list(absent), get_dialect(dialect), config or TaskConfig())


def expected_boxes(dialect, regions, indices, width=W, height=H):
    """Boxes the text must carry: each region box through the dialect's own serialise/parse."""
    return [dialect.parse(dialect.box(regions[i].box, width, height), width, height)[0].box for i in indices]


def conversations(dialect_name, seeds=range(30), config=None):
    dialect = get_dialect(dialect_name)
    config = config or TaskConfig(negative_rate=0.3, mia_rate=0.5)
    for seed in seeds:
        yield make_conversation(CTX, pelvis_regions(), ABSENT, dialect, random.Random(seed), config)


def test_same_seed_same_turns():
    first = make_conversation(
        CTX, pelvis_regions(), ABSENT, get_dialect("qwen-vl-grid"), random.Random(7), TaskConfig()
    )
    second = make_conversation(
        CTX, pelvis_regions(), ABSENT, get_dialect("qwen-vl-grid"), random.Random(7), TaskConfig()
    )
    assert [asdict(t) for t in first] == [asdict(t) for t in second]
    assert first


@pytest.mark.parametrize("dialect_name", sorted(DIALECTS))
def test_boxes_in_text_are_exactly_the_listed_regions(dialect_name):
    dialect = get_dialect(dialect_name)
    regions = pelvis_regions()
    seen = set()
    for turns in conversations(dialect_name):
        for turn in turns:
            seen.add(turn.task)
            assert "<image>" not in turn.question
            parsed = [g.box for g in dialect.parse(turn.question, W, H) + dialect.parse(turn.answer, W, H)]
            if turn.task == "mia" or turn.negative:
                assert parsed == []
                continue
            assert parsed == expected_boxes(dialect, regions, turn.regions), (
                turn.task,
                turn.question,
                turn.answer,
            )
            if dialect_name not in (
                "qwen2.5-vl-pixels",
                "llava-1.5-square",
            ):  # the others are exact under 1000 px
                assert parsed == [regions[i].box for i in turn.regions]
    assert seen == {"rec", "roc", "reg", "mia"}


def test_rec_grounds_both_instances_with_the_name():
    dialect = get_dialect("qwen-vl-grid")
    regions = pelvis_regions()[:3]
    turns = [rec_turn(state(regions), random.Random(seed)) for seed in range(20)]
    hip_turns = [t for t in turns if t.structure == "left hip"]
    assert hip_turns, "the left hip was never chosen in 20 seeds"
    for turn in hip_turns:
        assert turn.regions == [0, 2]
        grounded = dialect.parse(turn.answer, W, H)
        assert [g.box for g in grounded] == [regions[0].box, regions[2].box]
        assert {g.label for g in grounded} == {"left hip"}


def test_structure_choice_is_fair():
    chosen = {rec_turn(state(pelvis_regions()), random.Random(seed)).structure for seed in range(60)}
    assert chosen == {"left hip", "colon", "right hip", "both lungs"}


def test_rec_caps_boxes_and_roc_reg_take_over():
    nuclei = [
        region("cell nuclei", "cell nuclei", (4 * i, 4 * i, 4 * i + 3, 4 * i + 3), i) for i in range(25)
    ]
    config = TaskConfig(tasks=("rec", "roc", "reg"), max_boxes=20, mia_rate=0.0)
    assert rec_turn(state(nuclei, config=config), random.Random(0)) is None
    for seed in range(10):
        turns = make_conversation(CTX, nuclei, [], get_dialect("qwen-vl-grid"), random.Random(seed), config)
        assert turns and all(t.task in ("roc", "reg") for t in turns)
        assert all(len(t.regions) == 1 for t in turns)
    few = TaskConfig(max_boxes=30)
    assert len(rec_turn(state(nuclei, config=few), random.Random(0)).regions) == 25


def test_negatives_never_name_a_present_structure():
    regions = pelvis_regions()
    present = {r.name for r in regions}
    config = TaskConfig(tasks=("rec",), negative_rate=1.0, max_turns=4)
    for seed in range(20):
        turns = make_conversation(
            CTX, regions, ABSENT, get_dialect("qwen-vl-grid"), random.Random(seed), config
        )
        negatives = [t for t in turns if t.negative]
        assert len(negatives) == 3  # liver, spleen, urinary bladder: "hip_left"/"Left Hip" are present
        for turn in negatives:
            assert turn.task == "rec" and turn.regions == []
            assert turn.structure in {"liver", "spleen", "urinary bladder"}
            assert turn.structure in turn.question and turn.structure in turn.answer
            assert not any(name in turn.answer or name in turn.question for name in present)
            assert "not" in turn.answer or "no " in turn.answer.lower()


def test_negative_without_usable_absent_is_none():
    assert negative_turn(state(pelvis_regions(), absent=["left hip"]), random.Random(0)) is None


def test_mia_mentions_every_structure_and_counts():
    regions = pelvis_regions()
    turn = mia_turn(state(regions), random.Random(3))
    assert turn.task == "mia" and turn.regions == [0, 1, 2, 3, 4] and turn.structure is None
    for name in ("left hip", "colon", "right hip", "both lungs"):
        assert name in turn.answer
    assert "left hip (2 instances)" in turn.answer
    assert "CT" in turn.answer and "axial" in turn.answer and "pelvis" in turn.answer
    empty = mia_turn(state([]), random.Random(3))
    assert empty.regions == [] and "CT" in empty.answer


def test_reg_relates_to_a_grounded_other_region_and_describes():
    dialect = get_dialect("qwen-vl-grid")
    regions = pelvis_regions()
    for seed in range(10):
        turn = reg_turn(state(regions), random.Random(seed))
        assert len(turn.regions) == 2 and turn.structure == regions[turn.regions[0]].name
        other = regions[turn.regions[1]]
        assert other.name != turn.structure
        assert [g.label for g in dialect.parse(turn.answer, W, H)] == [other.name]
        assert regions[turn.regions[0]].position in turn.answer
    single = reg_turn(state(regions[1:2]), random.Random(0))
    assert single.regions == [0] and "large intestine" in single.answer


def test_conversation_shape_follows_config():
    config = TaskConfig(tasks=("roc",), max_turns=3, mia_rate=1.0)
    turns = make_conversation(
        CTX, pelvis_regions(), [], get_dialect("qwen-vl-grid"), random.Random(1), config
    )
    assert [t.task for t in turns] == ["roc", "roc", "roc"]  # one per structure, no repeats
    assert len({t.structure for t in turns}) == 3
    only_mia = TaskConfig(tasks=("mia",), mia_rate=0.0)
    turns = make_conversation(
        CTX, pelvis_regions(), [], get_dialect("qwen-vl-grid"), random.Random(1), only_mia
    )
    assert [t.task for t in turns] == ["mia"]
    assert (
        make_conversation(
            CTX, [], [], get_dialect("qwen-vl-grid"), random.Random(1), TaskConfig(mia_rate=0.0)
        )
        == []
    )
    with_mia = [
        make_conversation(
            CTX, pelvis_regions(), [], get_dialect("qwen-vl-grid"), random.Random(s), TaskConfig(mia_rate=1.0)
        )
        for s in range(5)
    ]
    assert all(sum(t.task == "mia" for t in turns) == 1 and len(turns) == 4 for turns in with_mia)


def test_unknown_task_names_are_errors():
    with pytest.raises(ValueError, match="known: rec, roc, reg, mia"):
        TaskConfig(tasks=("rec", "rek2"))
    with pytest.raises(KeyError, match="Did you mean 'mia'"):
        get_task("miaa")
    with pytest.raises(ValueError, match="negative_rate"):
        TaskConfig(negative_rate=1.5)
    assert set(TASKS) >= {"rec", "roc", "reg", "mia"}
