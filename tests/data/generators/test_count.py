"""The count task: one generator module and one registry entry, built on request and scored by strict eval."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from medground.data.api import build_dataset
from medground.data.generators import ImageContext, TaskConfig, make_conversation
from medground.data.records import RecordConfig, verify_turn
from medground.eval.api import evaluate_predictions
from medground.eval.stats import BootstrapConfig
from medground.grounding import get_dialect
from medground.tasks import default_tasks
from tests.conftest import box_region, cli_help

SAMPLE = Path(__file__).resolve().parents[3] / "src" / "medground" / "sample" / "medseg"
W, H = 200, 120
CTX = ImageContext(W, H, "histopathology", None, "tissue", "demo")


REGIONS = [
    box_region("cell nucleus", (10, 10, 20, 20), 0, (W, H)),
    box_region("gland", (60, 20, 120, 80), 0, (W, H)),
    box_region("cell nucleus", (150, 10, 160, 20), 1, (W, H)),
    box_region("cell nucleus", (150, 60, 160, 70), 2, (W, H)),
]


def test_count_is_opt_in():
    assert "count" not in default_tasks() and "count" not in TaskConfig().tasks
    build = cli_help("build")
    assert "count: 'How many cell nuclei are there?' -> the number of its instances (opt-in)" in build


def test_each_structure_is_counted_once_with_its_instances():
    dialect = get_dialect("qwen-vl-grid")
    turns = make_conversation(CTX, REGIONS, [], dialect, random.Random(0), TaskConfig(tasks=("count",)))
    # counted by hand: three nuclei, one gland; the answer agrees in number
    assert sorted((t.structure, t.answer, t.regions) for t in turns) == [
        ("cell nucleus", "There are 3 cell nuclei.", [0, 2, 3]),
        ("gland", "There is 1 gland.", [1]),
    ]
    assert all(verify_turn(t, REGIONS, dialect, W, H) is None for t in turns)
    nuclei = next(t for t in turns if t.structure == "cell nucleus")
    assert "cell nuclei" in nuclei.question and nuclei.question.startswith(("How many", "Count", "What is"))


def test_count_builds_and_is_scored_by_strict_eval(tmp_path):
    config = RecordConfig(seed=0, tasks=TaskConfig(tasks=("rec", "count"), max_turns=3))
    build_dataset([SAMPLE / "brats2021_flair_mr"], tmp_path / "build", config, report=False)
    records = [
        json.loads(line)
        for shard in sorted((tmp_path / "build" / "records").glob("*.jsonl"))
        for line in shard.read_text().splitlines()
    ]
    counted = 0
    for record in records:
        for i, turn in enumerate(record["turns"]):
            if turn["task"] == "count":
                counted += 1
                # the answer's number is the record's regions of that name, counted from the record
                n = sum(r["name"] == turn["structure"] for r in record["regions"])
                answer = record["conversations"][2 * i + 1]["value"]
                assert answer in (f"There is {n} {turn['structure']}.", f"{n}") or f" {n} " in answer
    assert counted > 0
    # a model that answers every count right and every grounding turn with nothing
    with (tmp_path / "predictions.jsonl").open("w") as handle:
        for record in records:
            answers = [
                record["conversations"][2 * i + 1]["value"] if t["task"] == "count" else ""
                for i, t in enumerate(record["turns"])
            ]
            handle.write(json.dumps({**record, "response": answers}) + "\n")
    result = evaluate_predictions(
        tmp_path / "predictions.jsonl", protocol="strict", bootstrap=BootstrapConfig(replicates=0)
    )
    assert result["rows_per_task"]["count"] == counted
    assert result["tasks"]["count"]["micro"] == pytest.approx({"accuracy": 1.0, "mae": 0.0, "answered": 1.0})
    with pytest.raises(ValueError, match=r"\['count'\] have no scorer in the bird protocol"):
        evaluate_predictions(tmp_path / "predictions.jsonl", protocol="bird")
