"""The task registry: the shipped tasks are complete, and a new task is one generator + one registry line.

The toy task here ("count": "How many X are there?" -> "3") is registered only for the test (monkeypatch)
and flows through the data engine (plan, generator, verify_turn, records, manifest) and evaluation
(rows, strict scorer, api counts, report) without any other list being edited.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medground.cli import app
from medground.data.api import build_dataset
from medground.data.records import RecordConfig, verify_turn
from medground.data.generators import ImageContext, TaskConfig, TaskState, make_conversation
from medground.data.generators.base import choose_structure, structure_groups
from medground.eval.api import evaluate_predictions
from medground.eval.report import main_metric, tables
from medground.eval.rows import PredRow, auto_task, file_task_hint, normalise_task
from medground.eval.stats import BootstrapConfig, aggregate, safe_div
from medground.eval.strict import evaluate_strict
from medground.grounding import get_dialect
from medground.tasks import PROTOCOLS, TASKS, RowShape, TaskSpec, load, task_names
from medground.types import Box, Region, Turn

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "medground" / "sample" / "medseg"
W, H = 200, 120
CTX = ImageContext(W, H, "ct", "axial", "abdomen", "demo")


# ---- the new task: one generator and one scorer (what a contributor would put in data/ and eval/) ----


def count_turn(state: TaskState, rng: random.Random) -> Turn | None:
    """'How many X are there?' -> the number of X's instances; names them, boxes none."""
    groups = structure_groups(state.regions)
    key = choose_structure(rng, list(groups), "count", state.used)
    if key is None:
        return None
    indices = groups[key]
    name = state.regions[indices[0]].name
    state.used.add(("count", key))
    return Turn("count", f"How many {name} regions are there?", str(len(indices)), list(indices), name)


def strict_count(rows: list[PredRow], task: str, config: BootstrapConfig) -> dict:
    """Exact-match accuracy of the answer, per modality and pooled."""
    correct = np.asarray([r.response.strip() == r.annotation.strip() for r in rows], dtype=float)
    cols = {"correct": correct, "items": np.ones(len(rows))}
    metrics = {"accuracy": lambda s: safe_div(s["correct"], s["items"])}
    return {"task": task, **aggregate(cols, [r.modality for r in rows], metrics, config)}


COUNT = TaskSpec(
    name="count",
    eval_name="count",
    summary="'How many X are there?' -> a number",
    generator=f"{__name__}:count_turn",
    boxes=False,
    scorers={"strict": f"{__name__}:strict_count"},
    main_metric={"strict": "accuracy"},
    aliases=("cnt",),
    bird_file_tag="CNT",
)


@pytest.fixture
def with_count(monkeypatch):
    """The one registry line, for this test only."""
    monkeypatch.setitem(TASKS, "count", COUNT)


def region(name: str, box: tuple[int, int, int, int], instance: int = 0) -> Region:
    b = Box(*box)
    mask = np.zeros((H, W), dtype=bool)
    mask[b.y0 : b.y1, b.x0 : b.x1] = True
    return Region(name, name, b, mask, instance, b.area, "in the centre of the image")


REGIONS = [
    region("kidney", (10, 10, 40, 40), 0),
    region("liver", (60, 20, 120, 80)),
    region("kidney", (150, 10, 180, 40), 1),
    region("kidney", (150, 60, 180, 90), 2),
]


# ---- the shipped registry ----


def test_shipped_tasks_are_complete_and_unambiguous():
    # the order is the default mix and the planner's draw order: changing it changes every build
    assert task_names() == ("rec", "roc", "reg", "mia")
    assert [s.eval_name for s in TASKS.values()] == ["vg", "roc", "rc", "mia"]
    names = [n for s in TASKS.values() for n in s.names]
    assert len(names) == len(set(names)), "a name or alias denotes two tasks"
    for spec in TASKS.values():
        assert callable(load(spec.generator))
        assert spec.negative is None or callable(load(spec.negative))
        assert set(spec.scorers) == set(PROTOCOLS) == set(spec.main_metric)
        assert all(callable(load(ref)) for ref in spec.scorers.values())
    # what verify_turn checks: REC/ROC/REG box their regions, MIA holds no box; REC has negatives
    assert [s.name for s in TASKS.values() if s.boxes] == ["rec", "roc", "reg"]
    assert [s.name for s in TASKS.values() if s.negative] == ["rec"]
    assert [s.name for s in TASKS.values() if s.whole_image] == ["mia"]


def test_eval_names_aliases_tags_and_metrics_come_from_the_registry():
    expected = {"rec": "vg", "VG": "vg", "ro": "roc", "reg": "rc", "gc": "rc", "MII": "mia", "mia": "mia"}
    assert {k: normalise_task(k, "x") for k in expected} == expected
    with pytest.raises(ValueError, match=r"rows.jsonl:3: unknown task 'count'"):
        normalise_task("count", "rows.jsonl:3")
    assert file_task_hint(Path("qwen_MII_ct.jsonl")) == "mia"
    assert file_task_hint(Path("run_GC_x.jsonl")) == "rc"
    assert main_metric("bird", "vg") == "recall@0.5" and main_metric("strict", "vg") == "f1@0.5"
    assert main_metric("strict", "absence") == "f1" and main_metric("bird", "absence") is None


def test_strict_vg_tables_lead_with_the_registry_main_metric():
    row = PredRow(
        "1", "ct_1.png", "ct", "ct", "vg", "q", "<box>(0,0),(9,9)</box>", "<box>(0,0),(9,9)</box>", "bird", 1
    )
    result = {"protocol": "strict", "tasks": evaluate_strict([row], BootstrapConfig(replicates=0))}
    shown = [(t.title, t.header[2:]) for t in tables(result)]
    assert shown == [
        ("strict / vg / IoU >= 0.5", ["precision@0.5", "recall@0.5", "f1@0.5", "mean_iou"]),
        ("strict / vg / IoU >= 0.25", ["precision@0.25", "recall@0.25", "f1@0.25"]),
        ("strict / vg / IoU >= 0.75", ["precision@0.75", "recall@0.75", "f1@0.75"]),
    ]


def test_cli_help_lists_the_registry():
    wide = {"COLUMNS": "400"}
    build = " ".join(CliRunner().invoke(app, ["build", "--help"], env=wide).output.split())
    assert all(f"{s.name}: {s.summary}" in build for s in TASKS.values()) and "rec,roc,reg,mia" in build
    evaluate = CliRunner().invoke(app, ["eval", "--help"], env=wide).output
    assert "vg (= rec) | roc | rc (= reg) | mia | auto" in evaluate


def test_verify_turn_reads_which_tasks_hold_boxes():
    qwen = get_dialect("qwen-vl")
    box = qwen.box(REGIONS[1].box, W, H)
    mia = Turn("mia", "Analyse this image.", f"A CT of the abdomen: the liver {box}.", [0, 1, 2, 3])
    assert verify_turn(mia, REGIONS, qwen, W, H) == "mia turn mentions a box but its task holds none"
    roc = Turn("roc", f"What is at {box}?", "The liver.", [1], "liver")
    assert verify_turn(roc, REGIONS, qwen, W, H) is None
    assert "roc turn boxes" in verify_turn(replace(roc, regions=[0]), REGIONS, qwen, W, H)
    assert "unknown task(s) 'count'" in verify_turn(Turn("count", "?", "3", [0]), REGIONS, qwen, W, H)


# ---- a new task through the engine and eval ----


def test_a_registered_task_is_planned_generated_and_verified(with_count):
    assert TaskConfig().tasks == ("rec", "roc", "reg", "mia", "count")
    qwen = get_dialect("qwen-vl")
    turns = make_conversation(CTX, REGIONS, [], qwen, random.Random(0), TaskConfig(tasks=("count",)))
    # two structures, each counted once; the answer is the number of its instances, counted here by hand
    assert sorted((t.structure, t.answer, t.regions) for t in turns) == [
        ("kidney", "3", [0, 2, 3]),
        ("liver", "1", [1]),
    ]
    assert all(verify_turn(t, REGIONS, qwen, W, H) is None for t in turns)
    boxed = Turn("count", f"How many are in {qwen.box(REGIONS[1].box, W, H)}?", "1", [1], "liver")
    assert verify_turn(boxed, REGIONS, qwen, W, H) == "count turn mentions a box but its task holds none"
    # mixed with REC: each task asks each of the two structures once, so four slots take all four pairs
    mixed = make_conversation(CTX, REGIONS, [], qwen, random.Random(3), TaskConfig(tasks=("rec", "count")))
    assert sorted((t.task, t.structure) for t in mixed) == [
        ("count", "kidney"),
        ("count", "liver"),
        ("rec", "kidney"),
        ("rec", "liver"),
    ]
    assert all(verify_turn(t, REGIONS, qwen, W, H) is None for t in mixed)


def test_a_registered_task_flows_through_build_and_strict_eval(with_count, tmp_path):
    config = RecordConfig(seed=0, tasks=TaskConfig(tasks=("count",), max_turns=2))
    manifest = build_dataset([SAMPLE / "covid19_medseg_ct"], tmp_path / "build", config, report=False)
    records = [
        json.loads(line)
        for shard in sorted((tmp_path / "build" / "records").glob("*.jsonl"))
        for line in shard.read_text().splitlines()
    ]
    turns = [(r, i, t) for r in records for i, t in enumerate(r["turns"])]
    assert turns and all(t["task"] == "count" for _, _, t in turns)
    assert manifest["counts"]["tasks"] == {"count": len(turns)}
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
    assert result["rows_per_task"]["count"] == len(turns)
    assert result["tasks"]["count"]["micro"]["accuracy"] == pytest.approx(expected_correct / len(turns))
    assert "strict / count" in (tmp_path / "report" / "report.md").read_text()
    assert main_metric("strict", "count") == "accuracy"
    with pytest.raises(ValueError, match=r"\['count'\] have no scorer in the bird protocol"):
        evaluate_predictions(predictions, protocol="bird")
    assert normalise_task("CNT", "x") == "count"


def test_auto_detection_tries_shapes_in_registry_order(with_count, monkeypatch):
    # a shape-less task is never guessed; with a shape placed before MIA it is
    assert auto_task("How many kidneys are there?", "3") == "mia"
    mia = TASKS["mia"]
    monkeypatch.setitem(TASKS, "count", replace(COUNT, shape=RowShape(False, answer_box=False, max_words=1)))
    monkeypatch.delitem(TASKS, "mia")
    monkeypatch.setitem(TASKS, "mia", mia)  # now after count
    assert list(TASKS) == ["rec", "roc", "reg", "count", "mia"]
    assert auto_task("How many kidneys are there?", "3") == "count"
    assert auto_task("Analyse this image.", "A CT scan of the abdomen.") == "mia"
