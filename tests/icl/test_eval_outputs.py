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


def _equal_within(values: list[float], patients: int = 3) -> list[dict]:
    """Rows of one method at k = 1: target t has ``patients`` patients, every row of it scoring values[t]."""
    return [_row("1", f"s{t}/x", f"p{p}", "m", 1, v) for t, v in enumerate(values) for p in range(patients)]


def test_interval_resamples_targets_as_well_as_patients() -> None:
    from medground.icl.evaluate import summarise

    # Two targets scoring 0 and 1 on every row: resampling patients within fixed targets would give
    # [0.5, 0.5]; drawing 2 targets with replacement gives mean 0 (p = 1/4), 0.5 (1/2) or 1 (1/4), so the
    # 2.5% and 97.5% points are 0 and 1.
    s = summarise(_equal_within([0.0, 1.0]), 1000, 0)["m"][1]
    assert s["dice"] == pytest.approx(0.5) and (s["lo"], s["hi"]) == (0.0, 1.0)
    # One target: only patients vary; patient 0 scores 0, patient 1 scores 1 (one row each) -> same [0, 1].
    rows = [_row("1", "a/x", "p0", "m", 1, 0.0), _row("1", "a/x", "p1", "m", 1, 1.0)]
    s = summarise(rows, 1000, 0)["m"][1]
    assert (s["lo"], s["hi"]) == (0.0, 1.0)


def test_equal_within_targets_gives_the_target_level_bootstrap() -> None:
    """Patients add nothing when all rows of a target are equal: the interval is the exact bootstrap of the
    mean of 5 target values, computed by enumerating all 5**5 equally likely draws."""
    import itertools

    import numpy as np

    from medground.icl.evaluate import summarise

    values = [0.1, 0.3, 0.5, 0.7, 0.9]
    means = np.sort([np.mean(draw) for draw in itertools.product(values, repeat=5)])
    exact = (means[int(0.025 * len(means))], means[int(0.975 * len(means))])  # 0.26, 0.74
    s = summarise(_equal_within(values), 4000, 0)["m"][1]
    assert s["lo"] == pytest.approx(exact[0], abs=0.02) and s["hi"] == pytest.approx(exact[1], abs=0.02)


def test_draws_are_shared_so_differences_are_paired() -> None:
    from medground.icl.evaluate import summarise

    rows = _equal_within([0.2, 0.5, 0.9])
    rows += [{**r, "method": "n", "dice": r["dice"] + 0.1} for r in rows]
    s = summarise(rows, 500, 0)
    assert s["n"][1]["lo"] == pytest.approx(s["m"][1]["lo"] + 0.1)
    assert s["n"][1]["hi"] == pytest.approx(s["m"][1]["hi"] + 0.1)


def test_unet_baseline_runs_the_same_steps_everywhere() -> None:
    """icl-eval's option, EvalConfig and unet_from_scratch share one default; the folds bench uses it."""
    import inspect
    import sys

    from medground.icl.baselines import UNET_STEPS, unet_from_scratch
    from medground.icl.commands import icl_eval_command

    assert UNET_STEPS == 60
    assert EvalConfig().unet_steps == UNET_STEPS
    assert inspect.signature(unet_from_scratch).parameters["steps"].default == UNET_STEPS
    assert inspect.signature(icl_eval_command).parameters["unet_steps"].default == UNET_STEPS
    sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
    try:
        import bench_icl_folds
    finally:
        sys.path.pop(0)
    assert bench_icl_folds.UNET_STEPS == UNET_STEPS
