"""The task registry: every registered task is complete, and a new task is one generator + one registry line.

The tests check the registry's structure (every task has a generator and a scorer for each protocol it
names, names are unambiguous, the default mix is the non-opt-in tasks) rather than its list of names, so
registering a task changes none of them. The toy task here ("toy-count": "How many X are there?" -> "3")
is registered only for the test (the ``registries`` fixture of tests/conftest.py restores every registry
after it) and flows through the data engine (plan, generator, verify_turn, records, manifest) and
evaluation (rows, strict scorer, api counts, report) without any other list being edited.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from medground.data.api import build_dataset
from medground.data.generators import ImageContext, TaskConfig, TaskState, make_conversation
from medground.data.generators.base import choose_structure, structure_groups
from medground.data.records import RecordConfig, verify_turn
from medground.eval.api import evaluate_predictions
from medground.eval.metrics import MetricSpec, declares, headline
from medground.eval.report import tables
from medground.eval.rows import PredRow, auto_task, file_task_hint, normalise_task
from medground.eval.stats import BootstrapConfig, aggregate, safe_div
from medground.eval.strict import evaluate_strict
from medground.grounding import get_dialect
from medground.tasks import PROTOCOLS, TASKS, RowShape, TaskSpec, default_tasks, load, task_names
from medground.types import Turn
from tests.conftest import REGISTRIES, TOY_PREFIX, box_region, cli_help

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "medground" / "sample" / "medseg"
ORDER_AT_IMPORT = tuple(TASKS)  # before any test of this file ran
W, H = 200, 120
CTX = ImageContext(W, H, "ct", "axial", "abdomen", "demo")


# ---- the new task: one generator and one scorer (what a contributor would put in data/ and eval/) ----


TOY = f"{TOY_PREFIX}count"


def count_turn(state: TaskState, rng: random.Random) -> Turn | None:
    """'How many X are there?' -> the number of X's instances; names them, boxes none."""
    groups = structure_groups(state.regions)
    key = choose_structure(rng, list(groups), TOY, state.used)
    if key is None:
        return None
    indices = groups[key]
    name = state.regions[indices[0]].name
    state.used.add((TOY, key))
    return Turn(TOY, f"How many {name} regions are there?", str(len(indices)), list(indices), name)


@declares(MetricSpec("accuracy", "headline"))
def strict_count(rows: list[PredRow], task: str, config: BootstrapConfig) -> dict:
    """Exact-match accuracy of the answer, per modality and pooled."""
    correct = np.asarray([r.response.strip() == r.annotation.strip() for r in rows], dtype=float)
    cols = {"correct": correct, "items": np.ones(len(rows))}
    metrics = {"accuracy": lambda s: safe_div(s["correct"], s["items"])}
    return {"task": task, **aggregate(cols, [r.modality for r in rows], metrics, config)}


COUNT = TaskSpec(
    name=TOY,
    bird_name=TOY,
    summary="'How many X are there?' -> a number",
    generator=f"{__name__}:count_turn",
    boxes=False,
    scorers={"strict": f"{__name__}:strict_count"},
    aliases=(f"{TOY_PREFIX}cnt",),
    bird_file_tag="TOYCNT",
)


@pytest.fixture
def with_count(registries):
    """The one registry line, for this test only (restored by the ``registries`` fixture)."""
    registries.add(TASKS, TOY, COUNT)


REGIONS = [
    box_region("kidney", (10, 10, 40, 40), 0, (W, H)),
    box_region("liver", (60, 20, 120, 80), 0, (W, H)),
    box_region("kidney", (150, 10, 180, 40), 1, (W, H)),
    box_region("kidney", (150, 60, 180, 90), 2, (W, H)),
]


# ---- the shipped registry ----


def test_every_task_is_complete_and_unambiguous():
    names = [n for s in TASKS.values() for n in s.names]
    assert len(names) == len(set(names)), "a name or alias denotes two tasks"
    assert not [n for n in names if n.startswith(TOY_PREFIX)], "a real name could collide with a test's toy"
    for spec in TASKS.values():
        assert callable(load(spec.generator)), spec.name
        assert spec.negative is None or callable(load(spec.negative)), spec.name
        # every protocol the task names has a scorer that loads and a headline metric
        assert spec.scorers and set(spec.scorers) <= set(PROTOCOLS), spec.name
        for protocol, ref in spec.scorers.items():
            declared = load(ref).metrics  # the scorer declares its metrics, exactly one headline
            assert [m.role for m in declared].count("headline") == 1, (spec.name, protocol)
        assert not (spec.whole_image and spec.boxes), f"{spec.name}: a whole-image task boxes no region"
        assert spec.negative is None or spec.boxes, f"{spec.name}: a negative is verified by its boxes"


def test_the_default_mix_is_the_tasks_not_opt_in_in_registry_order():
    assert default_tasks() == tuple(n for n in task_names() if TASKS[n].default_mix)
    assert default_tasks(), "a build needs at least one task by default"
    assert TaskConfig().tasks == default_tasks()
    build = cli_help("build")
    assert f"[default: {','.join(default_tasks())}]" in build


def test_an_opt_in_task_changes_no_default(with_count, registries):
    before = default_tasks()
    registries.add(
        TASKS, f"{TOY_PREFIX}opt-in", replace(COUNT, name=f"{TOY_PREFIX}opt-in", default_mix=False)
    )
    assert default_tasks() == before and TaskConfig().tasks == before
    assert f"{TOY_PREFIX}opt-in" in task_names()


def test_registries_fixture_restores_order_and_contents(registries):
    import importlib

    for module, attribute in REGISTRIES:
        registry = getattr(importlib.import_module(module), attribute, None)
        assert registry is not None, f"{module}.{attribute} moved: update REGISTRIES in tests/conftest.py"
        names = list(registry) if isinstance(registry, dict) else [cls.kind for cls in registry]
        assert not [n for n in names if n.startswith(TOY_PREFIX)], (
            f"{attribute}: a real name has the toy prefix"
        )
    first = next(iter(TASKS))
    spec = TASKS.pop(first)
    TASKS[first] = spec  # moved to the end; the fixture puts it back in front after this test
    with pytest.raises(ValueError, match="must start with"):
        registries.add(TASKS, "count2", COUNT)
    registries.add(TASKS, TOY, COUNT)
    with pytest.raises(ValueError, match="already registered"):
        registries.add(TASKS, TOY, COUNT)


def test_registries_fixture_restored_the_previous_test():
    # runs after test_registries_fixture_restores_order_and_contents (pytest keeps file order)
    assert tuple(TASKS) == ORDER_AT_IMPORT


def test_every_name_of_a_task_reads_as_its_one_name():
    # BiRD's names, file tags and aliases are read at the edge and become the task's one name
    for spec in TASKS.values():
        for name in filter(None, (spec.name, spec.bird_name, *spec.aliases, spec.bird_file_tag)):
            assert normalise_task(name, "x") == normalise_task(name.upper(), "x") == spec.name
        if spec.bird_file_tag:
            assert file_task_hint(Path(f"run_{spec.bird_file_tag}_ct.jsonl")) == spec.name


def test_eval_names_aliases_tags_and_metrics_come_from_the_registry():
    expected = {"rec": "rec", "VG": "rec", "ro": "roc", "rc": "reg", "gc": "reg", "MII": "mia", "mia": "mia"}
    assert {k: normalise_task(k, "x") for k in expected} == expected
    with pytest.raises(ValueError, match=r"rows.jsonl:3: unknown task 'toy-unknown'"):
        normalise_task("toy-unknown", "rows.jsonl:3")
    assert file_task_hint(Path("qwen_MII_ct.jsonl")) == "mia"
    assert file_task_hint(Path("run_GC_x.jsonl")) == "reg"


def test_strict_rec_tables_lead_with_the_declared_headline():
    row = PredRow(
        "1", "ct_1.png", "ct", "ct", "rec", "q", "<box>(0,0),(9,9)</box>", "<box>(0,0),(9,9)</box>", "bird", 1
    )
    result = {"protocol": "strict", "tasks": evaluate_strict([row], BootstrapConfig(replicates=0))}
    shown = [(t.title, t.header[2:]) for t in tables(result)]
    assert shown == [
        ("strict / rec / IoU >= 0.5", ["precision@0.5", "recall@0.5", "f1@0.5", "mean_iou", "mean_giou"]),
        ("strict / rec / IoU >= 0.25", ["precision@0.25", "recall@0.25", "f1@0.25"]),
        ("strict / rec / IoU >= 0.75", ["precision@0.75", "recall@0.75", "f1@0.75"]),
    ]


def test_cli_help_lists_the_registry():
    build = cli_help("build")
    assert all(f"{s.name}: {s.summary}" in build for s in TASKS.values())
    assert f"[default: {','.join(default_tasks())}]" in build
    evaluate = cli_help("eval")
    assert "rec (= vg) | roc | reg (= rc) | mia" in evaluate  # BiRD's names in brackets, where they differ
    assert all(f" {s.name} " in evaluate for s in TASKS.values()) and "| auto:" in evaluate


def test_verify_turn_reads_which_tasks_hold_boxes():
    qwen = get_dialect("qwen-vl")
    box = qwen.box(REGIONS[1].box, W, H)
    mia = Turn("mia", "Analyse this image.", f"A CT of the abdomen: the liver {box}.", [0, 1, 2, 3])
    assert verify_turn(mia, REGIONS, qwen, W, H) == "mia turn mentions a box but its task holds none"
    roc = Turn("roc", f"What is at {box}?", "The liver.", [1], "liver")
    assert verify_turn(roc, REGIONS, qwen, W, H) is None
    assert "roc turn boxes" in verify_turn(replace(roc, regions=[0]), REGIONS, qwen, W, H)
    unknown = Turn("toy-unknown", "?", "3", [0])
    assert "unknown task(s) 'toy-unknown'" in verify_turn(unknown, REGIONS, qwen, W, H)


# ---- a new task through the engine and eval ----


def test_a_registered_task_is_planned_generated_and_verified(with_count):
    # default_mix (True here): a new task joins the default mix, after the tasks already in it
    assert TaskConfig().tasks == (*(n for n in ORDER_AT_IMPORT if TASKS[n].default_mix), TOY)
    qwen = get_dialect("qwen-vl")
    turns = make_conversation(CTX, REGIONS, [], qwen, random.Random(0), TaskConfig(tasks=(TOY,)))
    # two structures, each counted once; the answer is the number of its instances, counted here by hand
    assert sorted((t.structure, t.answer, t.regions) for t in turns) == [
        ("kidney", "3", [0, 2, 3]),
        ("liver", "1", [1]),
    ]
    assert all(verify_turn(t, REGIONS, qwen, W, H) is None for t in turns)
    boxed = Turn(TOY, f"How many are in {qwen.box(REGIONS[1].box, W, H)}?", "1", [1], "liver")
    assert verify_turn(boxed, REGIONS, qwen, W, H) == f"{TOY} turn mentions a box but its task holds none"
    # mixed with REC: each task asks each of the two structures once, so four slots take all four pairs
    mixed = make_conversation(CTX, REGIONS, [], qwen, random.Random(3), TaskConfig(tasks=("rec", TOY)))
    assert sorted((t.task, t.structure) for t in mixed) == sorted(
        [(TOY, "kidney"), (TOY, "liver"), ("rec", "kidney"), ("rec", "liver")]
    )
    assert all(verify_turn(t, REGIONS, qwen, W, H) is None for t in mixed)


def test_a_registered_task_flows_through_build_and_strict_eval(with_count, tmp_path):
    config = RecordConfig(seed=0, tasks=TaskConfig(tasks=(TOY,), max_turns=2))
    manifest = build_dataset([SAMPLE / "brats2021_flair_mr"], tmp_path / "build", config, report=False)
    records = [
        json.loads(line)
        for shard in sorted((tmp_path / "build" / "records").glob("*.jsonl"))
        for line in shard.read_text().splitlines()
    ]
    turns = [(r, i, t) for r in records for i, t in enumerate(r["turns"])]
    assert turns and all(t["task"] == TOY for _, _, t in turns)
    assert manifest["counts"]["tasks"] == {TOY: len(turns)}
    for record, i, turn in turns:
        # the answer counts the record's regions of that name (read from the record, not the generator)
        answer = record["conversations"][2 * i + 1]["value"]
        assert answer == str(sum(reg["name"] == turn["structure"] for reg in record["regions"]))

    # predictions: the reference answer on even turns (counted over the file), "0" on odd ones; no
    # structure present has 0 instances, so exactly the even turns are right
    predictions = tmp_path / "predictions.jsonl"
    k = 0
    with predictions.open("w") as handle:
        for record in records:
            responses = []
            for i in range(len(record["turns"])):
                responses.append(record["conversations"][2 * i + 1]["value"] if k % 2 == 0 else "0")
                k += 1
            handle.write(json.dumps({**record, "response": responses}) + "\n")
    expected_correct = (len(turns) + 1) // 2
    result = evaluate_predictions(
        predictions, protocol="strict", out=tmp_path / "report", bootstrap=BootstrapConfig(replicates=0)
    )
    assert result["rows_per_task"][TOY] == len(turns)
    assert result["tasks"][TOY]["micro"]["accuracy"] == pytest.approx(expected_correct / len(turns))
    assert f"strict / {TOY}" in (tmp_path / "report" / "report.md").read_text()
    assert headline(result["tasks"][TOY]).name == "accuracy"
    with pytest.raises(ValueError, match=rf"\['{TOY}'\] have no scorer in the bird protocol"):
        evaluate_predictions(predictions, protocol="bird")
    assert normalise_task("TOY-CNT", "x") == TOY


def test_auto_detection_tries_shapes_in_registry_order(with_count):
    # a shape-less task is never guessed; with a shape placed before MIA it is (the registries fixture
    # behind with_count puts TASKS back in its order after this test)
    assert auto_task("How many kidneys are there?", "3") == "mia"
    TASKS[TOY] = replace(COUNT, shape=RowShape(False, answer_box=False, max_words=1))
    TASKS["mia"] = TASKS.pop("mia")  # now after the toy
    assert list(TASKS)[-2:] == [TOY, "mia"]
    assert auto_task("How many kidneys are there?", "3") == TOY
    assert auto_task("Analyse this image.", "A CT scan of the abdomen.") == "mia"
