"""Benchmark: the ICL verdicts of 2026-12-01 under the 2026-12-08 rules, with the CPU this session had.

Rules (issue 21, Deliver 5), fixed 2026-12-08 before anything below was scored:
- Held out means held out from the whole domain: ``medground.icl.protocol.SOURCE_DOMAINS`` (one modality and
  body region per domain, one rule for every modality). A model scores a task only if it trained on no
  source of the task's domain.
- Intervals resample tasks, then query patients within each drawn task (``medground.icl.stats``); paired
  differences use the same draws for both methods.
- Baseline (b), the U-Net fitted on the supports, runs ``medground.icl.baselines.UNET_STEPS`` (60) steps,
  icl-eval's default (the 2026-12-01 benches ran 30).
- Per-query rows are kept beside the reports (``results.jsonl``).

What is scored (the per-query rows of 2026-12-01 were never committed and its fold models are gone, so
nothing could be re-scored from rows):
- ``shipped``: the shipped RidgeSeg weights, which are the 2026-12-01 folds' fold-1 model (500 steps): under
  the domain table they are held out from hc18 and ph2 only (they trained on IDRiD, so not on DRIVE/FIVES);
  beside them their initialisation (seed 0, the same architecture), as bench_icl_folds.py builds it.
- ``fold5``: fold 5 of the 2026-12-08 ``FOLDS`` (ddti, usgra, shenzhen, dc1000 held out) trained and
  scored by bench_icl_folds.py's own functions (500 steps, seed 0), its initialisation beside it.
Both at the training size 64, k = 1, 2, 4, 8, bench_icl_folds.py's draws, queries and seed (3 x 2, seed 0),
RidgeSeg with the structure's name through its text rule ("ridgeseg+text") too. The 2026-12-01 folds
1-4 under the new folds (retraining 4 folds, about 30 CPU minutes, plus scoring) were not run.

    nice -n 10 .venv/bin/python bench/bench_icl_rules.py --out /tmp/icl_rules --copy bench/icl_rules_2026-12-08
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch
from bench_icl_folds import (
    BOOT,
    DRAWS,
    KS,
    QUERIES,
    SEED,
    TRAINED,
    UNTRAINED,
    WITH_TEXT,
    _main_rows,
    _rows,
    eval_data,
    paired_difference,
    train_fold,
)

from medground.icl.baselines import UNET_STEPS
from medground.icl.evaluate import EvalConfig, evaluate, write_outputs
from medground.icl.protocol import FOLDS, check_folds
from medground.icl.segmenter import DEFAULT_WEIGHTS, save_pretrained
from medground.icl.train import TrainConfig, build_model

SIZE = 64
COMPARISONS = ((TRAINED, UNTRAINED), (TRAINED, "unet"), (WITH_TEXT, TRAINED), (UNTRAINED, "unet"))


def _cpu() -> float:
    return time.process_time() / 60


def shipped_models(folder: Path) -> tuple[Path, Path]:
    """The shipped weights (copied) and their initialisation, built as bench_icl_folds.train_fold does."""
    trained, untrained = folder / "trained", folder / "untrained"
    if not (trained / "meta.json").is_file():
        shutil.copytree(
            DEFAULT_WEIGHTS, trained, ignore=shutil.ignore_patterns("box", "*.png", "TRAINING.md")
        )
    if not (untrained / "meta.json").is_file():
        meta = json.loads((trained / "meta.json").read_text())
        known = TrainConfig.__dataclass_fields__
        plain = {k: v for k, v in meta["train_config"].items() if k in known and not isinstance(v, dict)}
        cfg = TrainConfig(**plain)
        torch.manual_seed(cfg.seed)
        extra = {k: meta[k] for k in ("tasks", "seen_in_design", "seen_in_design_note")}
        note = "initialisation (0 steps) of the shipped weights' config; tasks = theirs, so the same sets are scored"
        config = {**meta["train_config"], "steps": 0}
        save_pretrained(build_model(cfg), untrained, {**extra, "train_config": config, "note": note})
    return trained, untrained


def score(name: str, folder: Path, models: tuple[Path, Path], spec: str) -> list[dict]:
    """Trained (with baselines) and untrained evaluations of one model pair; their rows, untrained renamed."""
    base = EvalConfig(
        data=eval_data(), ks=KS, draws=DRAWS, queries=QUERIES, bootstrap=BOOT, seed=SEED, size=SIZE, threads=1
    )
    rows = []
    for model, out, steps in ((models[0], "eval_trained", UNET_STEPS), (models[1], "eval_untrained", 0)):
        target = folder / out
        if not (target / "summary.json").is_file():
            start = _cpu()
            evaluate(replace(base, out=str(target), unet_steps=steps, models=[spec.format(model=model)]))
            (target / "cost.json").write_text(json.dumps({"cpu_min": round(_cpu() - start, 2)}))
        rows += _rows(target / "results.jsonl", out == "eval_untrained")
    print(f"{name}: {len(rows)} rows", flush=True)
    return rows


def verdicts(rows: list[dict]) -> list[str]:
    """Paired differences on the held-out known-patient rows, with hierarchical intervals."""
    main = _main_rows(rows)
    tasks = sorted({r["task"] for r in main})
    lines = [
        "# ICL verdicts under the 2026-12-08 rules",
        "",
        f"Held out (no source of the task's domain trained on), patients known: {len(tasks)} tasks: {', '.join(tasks)}.",
        "Paired differences on the same queries; [95% interval] resamples tasks, then query patients.",
        "",
        "| comparison | " + " | ".join(f"k={k}" for k in KS) + " |",
        "|---|" + "---|" * len(KS),
    ]
    for a, b in COMPARISONS:
        cells = []
        for k in KS:
            d = paired_difference(main, a, b, k)
            cells.append(f"{d['dice']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]")
        lines.append(f"| {a} - {b} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/work/runs/icl_rules"))
    parser.add_argument("--copy", type=Path, help="also copy the pooled report, rows and verdicts here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    check_folds()
    cost: dict[str, float] = {}
    start = _cpu()
    shipped = shipped_models(args.out / "shipped")
    rows = score("shipped", args.out / "shipped", shipped, "{model}")
    cost["shipped_cpu_min"] = round(_cpu() - start, 2)
    start = _cpu()
    fold5 = train_fold("5", args.out / "fold5")
    cost["fold5_train_cpu_min"] = round(_cpu() - start, 2)
    start = _cpu()
    rows += score("fold5", args.out / "fold5", fold5, ",".join(FOLDS["5"]) + ":{model}")
    cost["fold5_score_cpu_min"] = round(_cpu() - start, 2)
    pooled = args.out / "pooled"
    cfg = EvalConfig(
        data=eval_data(), ks=KS, draws=DRAWS, queries=QUERIES, bootstrap=BOOT, seed=SEED, size=SIZE
    )
    write_outputs(rows, cfg, [], [], pooled)
    lines = verdicts(rows) + ["", f"CPU minutes: {json.dumps(cost)}"]
    (pooled / "verdicts.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.copy:
        args.copy.mkdir(parents=True, exist_ok=True)
        for name in ("results.jsonl", "summary.json", "report.md", "verdicts.md", "dice_vs_k.png"):
            shutil.copyfile(pooled / name, args.copy / name)


if __name__ == "__main__":
    main()
