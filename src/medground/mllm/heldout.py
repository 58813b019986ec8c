"""Score a model on held-out splits against the prior-box and majority-class baselines (see baselines)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medground.mllm.baselines import evaluate_predictions, read_jsonl
from medground.mllm.data import read_records
from medground.mllm.grounder import Grounder, predict

__all__ = ["heldout_report"]


def heldout_report(
    grounder: Grounder,
    data_dir: str | Path,
    splits: tuple[str, ...],
    out_dir: str | Path,
    train_split: str = "train",
) -> dict[str, Any]:
    """Predict each split into ``out_dir/pred-<split>.jsonl`` and score it; also the union of all splits.

    Writes and returns ``{split: scores, "+".join(splits): scores}`` (``out_dir/heldout.json``); scores
    are those of :func:`medground.mllm.baselines.evaluate_predictions`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = read_records(data_dir, train_split)
    report: dict[str, Any] = {}
    all_rows, all_records = [], []
    for split in splits:
        pred = out / f"pred-{split}.jsonl"
        predict(grounder, data_dir, split, pred)
        rows, records = read_jsonl(pred), read_records(data_dir, split)
        report[split] = evaluate_predictions(rows, records, train) | {"records": len(records)}
        all_rows += rows
        all_records += records
    if len(splits) > 1:
        report["+".join(splits)] = evaluate_predictions(all_rows, all_records, train) | {
            "records": len(all_records)
        }
    (out / "heldout.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
