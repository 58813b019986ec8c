"""icl-eval's writer for pooled rows (bench_icl_folds.py pools its folds with it) and the k = 16 patient rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medground.icl.evaluate import EvalConfig, qualifies, write_outputs
from medground.icl.targets import SegTarget


def _task(cases: list[str | None]) -> SegTarget:
    n = len(cases)
    images, masks = torch.zeros(n, 3, 8, 8), torch.ones(n, 1, 8, 8)
    return SegTarget("src", "organ", "organ", images, masks, [f"i{j}" for j in range(n)], cases)


def test_min_patients_refuses_tasks_with_too_few_or_unknown_patients() -> None:
    many_slices = _task(["a"] * 10 + ["b"] * 10 + ["c"] * 10)  # k = 16 fits: 20 slices outside one patient
    assert qualifies(many_slices, 16)[0]
    ok, why = qualifies(many_slices, 16, min_patients=17)
    assert not ok and why == "3 patients, fewer than the 17 patients required"
    assert qualifies(_task([f"p{i}" for i in range(17)]), 16, min_patients=17) == (True, "")
    assert "patients unknown" in qualifies(_task([None] * 20), 16, min_patients=17)[1]


def _row(fold: str, task: str, patient: str, method: str, k: int, dice: float) -> dict:
    return {
        "fold": fold, "task": task, "source": task.split("/")[0], "role": "held-out",
        "patients_known": True, "design_seen": False, "k": k, "draw": 0, "method": method,
        "query": f"{patient}.png", "patient": patient, "dice": dice, "hd95": 1.0,
    }  # fmt: skip


def test_pooled_rows_of_two_folds_are_summarised_per_task(tmp_path: Path) -> None:
    rows = []
    for fold, task, dices in (("1", "a/x", (0.2, 0.6)), ("2", "b/y", (0.4, 1.0))):
        for patient, d in zip(("p", "q"), dices, strict=True):
            rows += [_row(fold, task, patient, "m", 1, d / 2), _row(fold, task, patient, "m", 2, d)]
    cfg = EvalConfig(ks=[1, 2], bootstrap=50)
    payload = write_outputs(rows, cfg, [], [], tmp_path / "pooled")
    main = payload["summaries"]["held-out, patients known"]["m"]
    # task a/x: (0.2 + 0.6) / 2 = 0.4, b/y: 0.7 -> k = 2 mean 0.55, k = 1 half of it
    assert main[2]["dice"] == pytest.approx(0.55) and main[1]["dice"] == pytest.approx(0.275)
    assert main[2]["tasks"] == 2 and main[2]["patients"] == 4
    assert payload["gain_checks"]["held-out, patients known"]["m"]["passes"]  # every query gains
    saved = json.loads((tmp_path / "pooled" / "summary.json").read_text())
    assert saved["summaries"]["held-out, patients known"]["m"]["2"]["dice"] == pytest.approx(0.55)
    assert len((tmp_path / "pooled" / "results.jsonl").read_text().splitlines()) == len(rows)
    assert (tmp_path / "pooled" / "report.md").is_file() and (tmp_path / "pooled" / "dice_vs_k.png").is_file()
