"""Benchmark: does episodic training make RidgeSeg better on held-out domains? Leave-domain-out folds.

Protocol, fixed 2026-12-01 05:50 UTC before any fold model was trained or scored:
- Folds: ``medground.icl.protocol.FOLDS`` (checked by ``check_folds``). The 2026-12-01 run used the folds of
  that day: the 18 2D datasets of ``shared/data/medseg`` in the 5 folds bench_boxseg.py used, plus
  ``msd_hippocampus_mr`` (8 subjects, scored by patient) in fold 4; they split four domains of today's
  table over two folds (see bench/RESULTS.md, "ICL verdicts restated"). Since 2026-12-08 the folds keep each
  domain (``SOURCE_DOMAINS``: one modality and body region) whole and add ddti. The single-patient volumes
  (and the two-subject spinal-cord MR) are ``TRAINING_ONLY``: their slices train every fold's model except
  the fold holding out their domain (the BraTS volumes leave with brain MR). At most 4 of the 24 datasets
  per fold.
- Training: ``medground.icl.train.train`` (what ``medground icl-train`` runs) on every source outside
  the fold, RidgeSeg, ``STEPS`` steps for every fold (measured: about 65 steps per CPU-minute here, so
  about 8 minutes), seed 0, one thread. Hyperparameters are NOT tuned: they are the shipped recipe
  (size 64, lr 2e-3 cosine, 4 episodes x 2 queries, k in 1..8, 30% synthetic tasks, same
  augmentation; ``TrainConfig`` defaults) with fewer steps to fit the CPU budget; no inner-fold
  search was run (no CPU time for it).
- Untrained: the same architecture at the initialisation of the same seed (``torch.manual_seed(0)``
  then ``build_model``, as ``train`` does before its first step); its meta.json lists the fold's
  training tasks only so that icl-eval scores it on exactly the trained model's task sets.
- Scoring: ``medground.icl.evaluate`` (icl-eval's protocol: supports from other patients, one task
  set for every k, Dice at the query's resolution, bootstrap over query patients) at k = 1, 2, 4, 8,
  ``DRAWS`` draws x ``QUERIES`` queries, seed 0; baselines (a) support prior, (b) U-Net fitted on the
  supports for ``UNET_STEPS`` steps (``medground.icl.baselines.UNET_STEPS``, icl-eval's default: 60;
  the 2026-12-01 run used 30). k = 16 is
  scored apart (``K16``), on tasks with at least 17 patients (those of drive, hc18, ph2, idrid), with
  their k = 1..8 rows beside it. In-distribution rows: fold ``IN_DISTRIBUTION_FOLD`` only (CPU).
- (c) UniverSeg is not trained here (no CPU time left for it after the rest; its earlier runs failed
  the sanity check).
- Shipped weights: fold ``SHIPPED_FOLD``'s trained model (chosen in advance: it holds out the bundled
  fetal-head sample, as the earlier weights did), so its honest numbers are that fold's rows.
- Resumable: a fold with its model, its evaluations and cost.json is not redone; training resumes from
  its checkpoint. CPU minutes are process CPU time of this (single-threaded) process per stage.
- ``--rescore-text`` (added 2026-12-01 after RidgeSeg's text rule, no training): every fold's trained
  model is scored again by icl-eval as it is now (same draws and seed, U-Net off) into
  ``fold*/eval_text_rule``; ``pooled_text_rule/`` pools "ridgeseg+text" with the rule beside the first
  run's "ridgeseg+text" (before the rule) and "ridgeseg" rows, and checks that the re-scored
  "ridgeseg" rows reproduce the first run's.
Data looked at while designing this: the dataset list and per-task patient counts; the held-out
numbers of the earlier shipped weights in bench/RESULTS.md (on idrid, hc18, ph2, shenzhen and
hippocampus), which fixed nothing here.

    nice -n 5 .venv/bin/python bench/bench_icl_folds.py --out /work/runs/icl_folds
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from medground.icl.baselines import UNET_STEPS
from medground.icl.evaluate import EvalConfig, evaluate, summarise, write_outputs
from medground.icl.protocol import FOLDS, TRAINING_ONLY, check_folds
from medground.icl.report import MAIN
from medground.icl.segmenter import DEFAULT_WEIGHTS, save_pretrained
from medground.icl.train import TrainConfig, build_model, train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MEDSEG = SHARED / "medseg"
SCORED_VOLUMES = ["msd_hippocampus_mr"]
STEPS, SEED = 500, 0
KS, K16, DRAWS, QUERIES, BOOT = [1, 2, 4, 8], 16, 3, 2, 1000
IN_DISTRIBUTION_FOLD, SHIPPED_FOLD = "1", "1"
TRAINED, UNTRAINED = "ridgeseg", "ridgeseg untrained"
WITH_TEXT = "ridgeseg+text"
RULE, BEFORE = "ridgeseg+text (rule)", "ridgeseg+text (before the rule)"
BASELINES = ("prior", "unet")


def train_data() -> list[str]:
    """The 2D collection and every volume collection (training-only ones included)."""
    return [str(MEDSEG)] + [str(SHARED / "medvol" / v) for v in sorted(TRAINING_ONLY) + SCORED_VOLUMES]


def eval_data() -> list[str]:
    """What is scored: the 2D collection and the multi-patient volumes."""
    return [str(MEDSEG)] + [str(SHARED / "medvol" / v) for v in SCORED_VOLUMES]


def _cpu() -> float:
    return time.process_time() / 60


def _design_meta() -> dict:
    """The shipped weights' record of which datasets RidgeSeg's design looked at (same architecture)."""
    meta = json.loads((DEFAULT_WEIGHTS / "meta.json").read_text())
    return {k: meta[k] for k in ("seen_in_design", "seen_in_design_note")}


def train_fold(fold: str, folder: Path) -> tuple[Path, Path]:
    """Trained and untrained model folders of one fold (trained unless already complete)."""
    cfg = TrainConfig(
        data=train_data(), out=str(folder / "trained"), held_out=list(FOLDS[fold]), steps=STEPS, seed=SEED
    )
    trained, untrained = Path(cfg.out), folder / "untrained"
    state = trained / "checkpoint" / "state.json"
    done = (trained / "meta.json").is_file() and state.is_file()
    if not (done and json.loads(state.read_text())["step"] == STEPS):
        train(cfg, progress=False)
        meta = json.loads((trained / "meta.json").read_text())
        (trained / "meta.json").write_text(json.dumps({**meta, **_design_meta()}, indent=2, sort_keys=True))
    if not (untrained / "meta.json").is_file():
        meta = json.loads((trained / "meta.json").read_text())
        torch.manual_seed(cfg.seed)
        note = "initialisation (0 steps); tasks = the fold's training tasks, so icl-eval scores the same sets"
        extra = {**_design_meta(), "tasks": meta["tasks"], "train_config": {**asdict(cfg), "steps": 0}}
        save_pretrained(build_model(cfg), untrained, {**extra, "note": note})
    return trained, untrained


def score_fold(fold: str, folder: Path, trained: Path, untrained: Path) -> dict[str, float]:
    """Run the four evaluations of a fold that are not done yet; CPU minutes of each run."""
    held = ",".join(FOLDS[fold])
    base = EvalConfig(data=eval_data(), ks=KS, draws=DRAWS, queries=QUERIES, bootstrap=BOOT, seed=SEED)
    runs = {
        "eval_trained": replace(base, unet_steps=UNET_STEPS, in_distribution=fold == IN_DISTRIBUTION_FOLD),
        "eval_untrained": replace(base, unet_steps=0, in_distribution=fold == IN_DISTRIBUTION_FOLD),
        "eval16_trained": replace(base, ks=[K16], unet_steps=UNET_STEPS, min_patients=K16 + 1),
        "eval16_untrained": replace(base, ks=[K16], unet_steps=0, min_patients=K16 + 1),
    }
    cost = {}
    for name, cfg in runs.items():
        if (folder / name / "summary.json").is_file():
            continue
        model = trained if name.endswith("_trained") else untrained
        start = _cpu()
        evaluate(replace(cfg, out=str(folder / name), models=[f"{held}:{model}"]))
        cost[f"{name}_cpu_min"] = round(_cpu() - start, 2)
    return cost


def _rows(path: Path, untrained: bool) -> list[dict]:
    """Result rows of one evaluation; an untrained model's own rows renamed, its baselines dropped
    (they repeat the trained run's: same draws)."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    if not untrained:
        return rows
    return [{**r, "method": UNTRAINED} for r in rows if r["method"] == TRAINED]


def pooled_rows(out: Path, prefix: str) -> list[dict]:
    """Rows of every fold's ``prefix``_trained and ``prefix``_untrained evaluations."""
    rows = []
    for fold in FOLDS:
        rows += _rows(out / f"fold{fold}" / f"{prefix}_trained" / "results.jsonl", False)
        rows += _rows(out / f"fold{fold}" / f"{prefix}_untrained" / "results.jsonl", True)
    return rows


def paired_difference(rows: list[dict], a: str, b: str, k: int) -> dict:
    """Dice(a) - Dice(b) at k on the same queries: mean over tasks, paired bootstrap interval."""
    other = {(r["task"], r["draw"], r["query"]): r["dice"] for r in rows if r["method"] == b and r["k"] == k}
    diff = [
        {**r, "dice": r["dice"] - other[key], "hd95": 0.0}
        for r in rows
        if r["method"] == a and r["k"] == k and (key := (r["task"], r["draw"], r["query"])) in other
    ]
    return summarise(diff, BOOT, SEED)[a][k]


def _main_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["role"] == "held-out" and r["patients_known"]]


def bars(payload: dict, rows: list[dict]) -> list[str]:
    """The issue's three ICL bars on the pooled held-out known-patient table."""
    main, checks = payload["summaries"][MAIN], payload["gain_checks"][MAIN]
    rows = _main_rows(rows)
    gain = paired_difference(rows, TRAINED, UNTRAINED, 4)
    lines = [
        f"- trained - untrained at k=4: {gain['dice']:+.3f} [{gain['lo']:+.3f}, {gain['hi']:+.3f}] "
        f"(bar >= +0.05): {'MET' if gain['dice'] >= 0.05 else 'MISSED'}"
    ]
    passed = [m for m in BASELINES if checks.get(m, {}).get("passes")]
    lines.append(f"- baselines that pass the sanity check: {passed or 'none'}")
    for k in KS:
        if not passed:
            break
        best = max(passed, key=lambda m: main[m][k]["dice"])
        d = paired_difference(rows, TRAINED, best, k)
        verdict = "MET" if d["lo"] > 0 else "TIE (interval spans 0)" if d["hi"] > 0 else "MISSED"
        lines.append(
            f"- k={k}: trained - {best} = {d['dice']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]: {verdict}"
        )
    k8 = main[TRAINED][8]["dice"]
    lines.append(f"- mean held-out Dice at k=8: {k8:.3f} (bar >= 0.70): {'MET' if k8 >= 0.70 else 'MISSED'}")
    return lines


def fold_table(rows: list[dict]) -> list[str]:
    """Per fold, per method: mean Dice [interval] on that fold's held-out known-patient tasks."""
    lines = [
        "| fold | tasks | method | " + " | ".join(f"k={k}" for k in KS) + " |",
        "|---|---|---|" + "---|" * len(KS),
    ]
    for fold, members in FOLDS.items():
        mine = [r for r in _main_rows(rows) if r["source"] in members]
        if not mine:
            lines.append(
                f"| {fold} | 0 | (no held-out task with known patients qualifies for k = 8) |"
                + " |" * len(KS)
            )
            continue
        summary, n = summarise(mine, BOOT, SEED), len({r["task"] for r in mine})
        for method in (TRAINED, UNTRAINED, *BASELINES):
            cells = [
                f"{s['dice']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}]" for s in (summary[method][k] for k in KS)
            ]
            lines.append(f"| {fold} | {n} | {method} | " + " | ".join(cells) + " |")
    return lines


def report(out: Path) -> None:
    """Pool the folds: pooled/ (icl-eval's outputs), pooled_k16/, bars and per-fold table in pooled/folds.md."""
    cfg = EvalConfig(data=eval_data(), ks=KS, draws=DRAWS, queries=QUERIES, bootstrap=BOOT, seed=SEED)
    rows = pooled_rows(out, "eval")
    excluded = [e for fold in FOLDS for e in _summary(out, fold)["excluded_tasks"]]
    payload = write_outputs(rows, cfg, excluded, _summary(out, next(iter(FOLDS)))["skipped"], out / "pooled")
    k16 = pooled_rows(out, "eval16")
    tasks16 = {r["task"] for r in k16}
    beside = [r for r in rows if r["task"] in tasks16 and r["role"] == "held-out"]
    if k16:
        write_outputs(beside + k16, replace(cfg, ks=[*KS, K16]), [], [], out / "pooled_k16")
    costs = {fold: json.loads((out / f"fold{fold}" / "cost.json").read_text()) for fold in FOLDS}
    lines = ["# Bars (pooled held-out, patients known)", "", *bars(payload, rows), "", "# Per fold", ""]
    lines += fold_table(rows) + ["", "# CPU minutes per fold", "", "```", json.dumps(costs, indent=1), "```"]
    (out / "pooled" / "folds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _key(row: dict) -> tuple:
    """A result row's query identity: the same in every run with the same draws."""
    return row["task"], row["k"], row["draw"], row["query"]


def rescore_text(out: Path) -> None:
    """Score every fold's trained model again (no training; U-Net off) with icl-eval as it is now, and
    pool its "+text" rows beside the first run's in ``out/pooled_text_rule`` (see the module docstring)."""
    cfg = EvalConfig(
        data=eval_data(), ks=KS, draws=DRAWS, queries=QUERIES, bootstrap=BOOT, seed=SEED, unet_steps=0
    )
    rows, excluded, costs = [], [], {}
    for fold in FOLDS:
        folder = out / f"fold{fold}"
        first, target = folder / "eval_trained", folder / "eval_text_rule"
        if not (folder / "trained" / "meta.json").is_file() or not (first / "results.jsonl").is_file():
            raise FileNotFoundError(
                f"{folder}: no trained model and first evaluation; run without --rescore-text"
            )
        cost_file = folder / "cost_text_rule.json"
        if not (target / "summary.json").is_file():
            start = _cpu()
            evaluate(replace(cfg, out=str(target), models=[f"{','.join(FOLDS[fold])}:{folder / 'trained'}"]))
            cost_file.write_text(json.dumps({"rescore_cpu_min": round(_cpu() - start, 2)}))
        costs[fold] = json.loads(cost_file.read_text())["rescore_cpu_min"]
        rows += [
            {**r, "method": BEFORE} if r["method"] == WITH_TEXT else r
            for r in _read_rows(first / "results.jsonl")
            if r["method"] in (TRAINED, WITH_TEXT) and r["role"] == "held-out"
        ]
        new = _read_rows(target / "results.jsonl")
        rows += [{**r, "method": RULE} for r in new if r["method"] == WITH_TEXT]
        rows += [{**r, "method": f"{TRAINED} (re-scored)"} for r in new if r["method"] == TRAINED]
        excluded += json.loads((target / "summary.json").read_text())["excluded_tasks"]
    again = {_key(r): r["dice"] for r in rows if r["method"].endswith("(re-scored)")}
    first_run = [r for r in rows if r["method"] == TRAINED]
    drift = [abs(r["dice"] - again[_key(r)]) for r in first_run if _key(r) in again]
    rows = [r for r in rows if not r["method"].endswith("(re-scored)")]
    main = write_outputs(rows, cfg, excluded, [], out / "pooled_text_rule")["summaries"][MAIN]
    lines = ["# Text beside supports: the rule vs before (pooled held-out, patients known)", ""]
    lines += ["| method | " + " | ".join(f"k={k}" for k in KS) + " |", "|---|" + "---|" * len(KS)]
    for method in (TRAINED, BEFORE, RULE):
        cells = [f"{s['dice']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}]" for s in (main[method][k] for k in KS)]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "Paired differences on the same queries, mean [95% interval]:", ""]
    for a, b in ((RULE, TRAINED), (RULE, BEFORE), (BEFORE, TRAINED)):
        diffs = [paired_difference(_main_rows(rows), a, b, k) for k in KS]
        lines.append(
            f"- {a} - {b}: "
            + ", ".join(
                f"k={k} {d['dice']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
                for k, d in zip(KS, diffs, strict=True)
            )
        )
    kept = [
        f"k={k} {sum(bool(r['text_used']) for r in m)}/{len(m)}"
        for k in KS
        if (m := [r for r in _main_rows(rows) if r["method"] == RULE and r["k"] == k])
    ]
    lines += [
        f"- rows whose text the rule kept: {', '.join(kept)}",
        f"- re-scored '{TRAINED}' rows vs the first run's: {len(drift)} of {len(first_run)} matched, "
        f"largest |Dice difference| {max(drift, default=float('nan')):.2e}",
        f"- CPU minutes of the re-scoring per fold: {json.dumps(costs)} (total {sum(costs.values()):.1f})",
    ]
    (out / "pooled_text_rule" / "text_rule.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _summary(out: Path, fold: str) -> dict:
    return json.loads((out / f"fold{fold}" / "eval_trained" / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/work/runs/icl_folds"))
    parser.add_argument("--folds", default=",".join(FOLDS), help="comma-separated fold names to run")
    parser.add_argument(
        "--figure", type=Path, default=Path(__file__).parent / "figures" / "icl_folds_dice_vs_k.png"
    )
    parser.add_argument(
        "--rescore-text",
        action="store_true",
        help="no training: re-score the trained folds' '+text' method as icl-eval does it now (the text rule)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    check_folds()
    if args.rescore_text:
        rescore_text(args.out)
        return
    for fold in [f for f in args.folds.split(",") if f]:
        folder = args.out / f"fold{fold}"
        cost_file = folder / "cost.json"
        cost = json.loads(cost_file.read_text()) if cost_file.is_file() else {}
        start, wall = _cpu(), time.time()
        trained, untrained = train_fold(fold, folder)
        if "train_cpu_min" not in cost:
            cost |= {
                "train_cpu_min": round(_cpu() - start, 2),
                "train_wall_min": round((time.time() - wall) / 60, 2),
            }
        cost |= score_fold(fold, folder, trained, untrained)
        cost_file.write_text(json.dumps(cost, indent=1))
        print(f"fold {fold}: {cost}", flush=True)
    if all((args.out / f"fold{f}" / "cost.json").is_file() for f in FOLDS):
        report(args.out)
        shutil.copyfile(args.out / "pooled" / "dice_vs_k.png", args.figure)


if __name__ == "__main__":
    main()
