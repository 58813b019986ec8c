"""Benchmark: RidgeSeg's working resolution chosen on each fold's training datasets, then scored held out.

Issue 10, Deliver 1 asks for hyperparameters "chosen on inner folds of the training datasets only". The
fold models of ``bench/bench_icl_folds.py`` were trained with the shipped recipe, untuned. Retraining five
folds per candidate is beyond this machine's CPU, but one hyperparameter needs no retraining: the working
resolution S at which a trained RidgeSeg runs (its weights do not depend on it; see
``medground.icl.segmenter.load_pretrained``). Protocol, fixed before any held-out score at another size was
seen:

- Models: the five folds' trained and untrained (initialisation) RidgeSeg of bench_icl_folds.py
  (``--folds-out``, default its run folder); nothing is retrained.
- Candidates: S in ``SIZES``: 64 (the training size) up to 256 (the solve samples every (S // 64)-th row
  and column, so its cost stays that of 64; features and refinement cost (S / 64)**2 times more). The grid
  grew while only selection scores were seen: first (64, 128), then 192 when 128 won every fold, then 256
  when 192 won the first fold scored; no held-out score at a size other than 64 had been seen.
- Selection, per fold and per model: icl-eval run on the fold's *training* datasets only (the 2D datasets
  and hippocampus subjects the fold trained on; never a dataset it holds out), tasks with known patients that
  qualify for k = 8, k = 1, 2, 4, 8, ``SEL_DRAWS`` draws x ``SEL_QUERIES`` queries with seed ``SEL_SEED``
  (not the held-out runs' seed), U-Net off. Criterion: the mean over those tasks of the mean Dice over k of
  the model without text; ties go to the smaller size. For the untrained network every selection task is
  unseen; for the trained one they are its training tasks (in distribution), which favours its training size.
- Held out: icl-eval on the fold's held-out datasets at the chosen size with the draws, queries and seed of
  bench_icl_folds.py (3 x 2, seed 0), U-Net off. Its rows are pooled with the first run's rows at S = 64
  (the U-Net and support prior there keep the configuration fixed before the folds were scored), and
  paired by query: every run draws the same queries and supports.

- ``--unet-size N`` also scores the U-Net baseline at working size N (``UNET_STEPS`` steps, icl-eval's default
  60 since 2026-12-08; the 2026-12-01 run used 30): a check of
  how much of the gap to the U-Net is resolution; added after the held-out results above were seen.

    python bench/bench_icl_size.py [--folds-out /work/runs/icl_folds] [--out /work/runs/icl_size] [--unet-size 128]

Writes ``OUT/fold<f>/selection.json`` (every candidate's selection score, the chosen sizes), ``OUT/fold<f>/...``
(icl-eval folders, ``cost.json``),
``OUT/pooled`` (icl-eval's report of the pooled held-out rows) and ``OUT/size.md`` (the tables).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench_icl_folds import (
    BOOT,
    DRAWS,
    KS,
    MEDSEG,
    QUERIES,
    SCORED_VOLUMES,
    SEED,
    SHARED,
    TRAINED,
    UNTRAINED,
    _cpu,
    _main_rows,
    _read_rows,
    eval_data,
    paired_difference,
    pooled_rows,
)

from medground.icl.baselines import UNET_STEPS
from medground.icl.evaluate import EvalConfig, evaluate, qualifies, write_outputs
from medground.icl.protocol import FOLDS
from medground.icl.report import MAIN
from medground.icl.targets import load_targets

SIZES = (64, 128, 192, 256)
SEL_DRAWS, SEL_QUERIES, SEL_SEED = 2, 2, 1
MODELS = {TRAINED: "trained", UNTRAINED: "untrained"}
"""Method name in the pooled tables -> the fold's model folder name."""


def selection_sources(fold: str) -> list[str]:
    """The fold's training datasets that have a task with known patients qualifying for k = 8 (the
    others cannot enter the selection score, so they are not scored at all)."""
    scored = sorted(p.name for p in MEDSEG.iterdir() if (p / "pairs.csv").is_file()) + SCORED_VOLUMES
    training = [s for s in scored if s not in FOLDS[fold]]
    tasks = load_targets([_path(s) for s in training], SIZES[0], min_examples=2).tasks
    return sorted({t.source for t in tasks if t.patients_known and qualifies(t, KS[-1])[0]})


def _path(source: str) -> str:
    return str(SHARED / "medvol" / source) if source in SCORED_VOLUMES else str(MEDSEG / source)


def selection_score(rows: list[dict]) -> dict:
    """Mean over the run's in-distribution tasks with known patients of the mean Dice over k (method
    without text): per task and k the mean over its rows, then the mean over tasks, then over k."""
    cells: dict[tuple[str, int], list[float]] = {}
    for r in rows:
        if r["method"] == TRAINED and r["role"] == "in-distribution" and r["patients_known"]:
            cells.setdefault((r["task"], r["k"]), []).append(r["dice"])
    tasks = sorted({task for task, _ in cells})
    per_k = {k: sum(sum(cells[t, k]) / len(cells[t, k]) for t in tasks) / len(tasks) for k in KS}
    return {"score": sum(per_k.values()) / len(per_k), "per_k": per_k, "tasks": tasks}


def select(fold: str, folds_out: Path, out: Path, costs: dict) -> dict:
    """``{"chosen": {method: size}, "scores": {method: {size: selection_score}}}`` of ``fold``: every
    candidate scored on the fold's training datasets."""
    training = selection_sources(fold)
    chosen, scores = {}, {}
    for method, name in MODELS.items():
        folder = folds_out / f"fold{fold}" / name
        scores[method] = {}
        for size in SIZES:
            target = out / f"fold{fold}" / f"select_{name}_{size}"
            if not (target / "summary.json").is_file():
                start = _cpu()
                cfg = EvalConfig(
                    data=[_path(s) for s in training],
                    out=str(target),
                    ks=KS,
                    models=[str(folder)],
                    draws=SEL_DRAWS,
                    queries=SEL_QUERIES,
                    unet_steps=0,
                    in_distribution=True,
                    bootstrap=100,
                    seed=SEL_SEED,
                    size=size,
                )
                evaluate(cfg)
                costs[f"fold{fold}/select_{name}_{size}"] = round(_cpu() - start, 2)
            scores[method][str(size)] = selection_score(_read_rows(target / "results.jsonl"))
        best = max(SIZES, key=lambda s: (round(scores[method][str(s)]["score"], 6), -s))
        chosen[method] = best
    return {"chosen": chosen, "scores": scores}


def _held_out_rows(
    fold: str, model: Path, target: Path, size: int, unet_steps: int, costs: dict
) -> list[dict]:
    """Result rows of icl-eval on ``fold``'s held-out datasets with ``model`` at working size ``size``, with
    the folds run's draws (run into ``target`` unless done; its CPU minutes go to ``costs``)."""
    if not (target / "summary.json").is_file():
        start = _cpu()
        cfg = EvalConfig(
            data=eval_data(),
            out=str(target),
            ks=KS,
            models=[f"{','.join(FOLDS[fold])}:{model}"],
            draws=DRAWS,
            queries=QUERIES,
            unet_steps=unet_steps,
            bootstrap=BOOT,
            seed=SEED,
            size=size,
        )
        evaluate(cfg)
        costs[f"fold{fold}/{target.name}"] = round(_cpu() - start, 2)
    return _read_rows(target / "results.jsonl")


def score_held_out(fold: str, folds_out: Path, out: Path, chosen: dict[str, int], costs: dict) -> list[dict]:
    """Held-out rows of both models at their chosen sizes (run unless done), renamed to the pooled names."""
    rows = []
    for method, name in MODELS.items():
        size = chosen[method]
        target = out / f"fold{fold}" / f"heldout_{name}_{size}"
        rows += [
            {**r, "method": f"{method} (chosen size)", "size": size}
            for r in _held_out_rows(fold, folds_out / f"fold{fold}" / name, target, size, 0, costs)
            if r["method"] == TRAINED and r["role"] == "held-out"
        ]
    return rows


def score_unet(fold: str, folds_out: Path, out: Path, size: int, costs: dict) -> list[dict]:
    """Held-out rows of the U-Net baseline (b) at working size ``size`` (``UNET_STEPS`` steps), from an
    icl-eval run of the fold's trained model at that size (its own rows are not used), renamed."""
    target = out / f"fold{fold}" / f"heldout_unet_{size}"
    model = folds_out / f"fold{fold}" / "trained"
    return [
        {**r, "method": f"unet at {size}"}
        for r in _held_out_rows(fold, model, target, size, UNET_STEPS, costs)
        if r["method"] == "unet" and r["role"] == "held-out"
    ]


def first_run_rows(folds_out: Path) -> list[dict]:
    """The held-out rows of bench_icl_folds.py's run (S = 64): ours, untrained, U-Net, prior (no text)."""
    return [
        r
        for r in pooled_rows(folds_out, "eval")
        if r["role"] == "held-out" and not r["method"].endswith("+text")
    ]


def report(rows: list[dict], selection: dict, costs: dict, out: Path) -> None:
    cfg = EvalConfig(data=[str(MEDSEG)], ks=KS, draws=DRAWS, queries=QUERIES, bootstrap=BOOT, seed=SEED)
    main = write_outputs(rows, cfg, [], [], out / "pooled")["summaries"][MAIN]
    lines = ["# RidgeSeg's working size, chosen on each fold's training datasets", "", "## Selection", ""]
    lines += [
        "| fold | model | " + " | ".join(f"S={s}" for s in SIZES) + " | chosen |",
        "|---|---|" + "---|" * (len(SIZES) + 1),
    ]
    for fold, sel in selection.items():
        for method in MODELS:
            cells = [f"{sel['scores'][method][str(s)]['score']:.3f}" for s in SIZES]
            lines.append(f"| {fold} | {method} | " + " | ".join(cells) + f" | {sel['chosen'][method]} |")
    lines += ["", "## Held out, patients known, pooled over folds (mean Dice [95% interval])", ""]
    lines += ["| method | " + " | ".join(f"k={k}" for k in KS) + " |", "|---|" + "---|" * len(KS)]
    for method in sorted(main):
        cells = [f"{c['dice']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}]" for c in (main[method][k] for k in KS)]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "Paired differences on the same queries, mean [95% interval]:", ""]
    chosen_trained, chosen_untrained = f"{TRAINED} (chosen size)", f"{UNTRAINED} (chosen size)"
    pairs = [
        (chosen_trained, TRAINED),
        (chosen_trained, chosen_untrained),
        (chosen_trained, "unet"),
        (chosen_untrained, UNTRAINED),
    ] + [(chosen_trained, m) for m in sorted(main) if m.startswith("unet at ")]
    main_rows = _main_rows(rows)
    for a, b in pairs:
        diffs = [paired_difference(main_rows, a, b, k) for k in KS]
        lines.append(
            f"- {a} - {b}: "
            + ", ".join(
                f"k={k} {d['dice']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
                for k, d in zip(KS, diffs, strict=True)
            )
        )
    lines += ["", f"CPU minutes: {json.dumps(costs)} (total {sum(costs.values()):.1f})"]
    (out / "size.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds-out", type=Path, default=Path("/work/runs/icl_folds"))
    parser.add_argument("--out", type=Path, default=Path("/work/runs/icl_size"))
    parser.add_argument("--folds", default=",".join(FOLDS), help="comma-separated folds to run")
    parser.add_argument(
        "--unet-size", type=int, default=0, help="also score the U-Net baseline at this working size (0: no)"
    )
    args = parser.parse_args()
    rows, selection, costs = [], {}, {}
    for fold in args.folds.split(","):
        folder = args.out / f"fold{fold}"
        folder.mkdir(parents=True, exist_ok=True)
        cost_file, sel_file = folder / "cost.json", folder / "selection.json"
        fold_costs = json.loads(cost_file.read_text()) if cost_file.is_file() else {}
        if not sel_file.is_file():
            sel_file.write_text(
                json.dumps(select(fold, args.folds_out, args.out, fold_costs), indent=2) + "\n"
            )
        selection[fold] = json.loads(sel_file.read_text())
        print(f"fold {fold}: chosen {selection[fold]['chosen']}")
        rows += score_held_out(fold, args.folds_out, args.out, selection[fold]["chosen"], fold_costs)
        if args.unet_size:
            rows += score_unet(fold, args.folds_out, args.out, args.unet_size, fold_costs)
        cost_file.write_text(json.dumps(fold_costs, indent=2) + "\n")
        costs.update(fold_costs)
    if set(selection) == set(FOLDS):
        report(first_run_rows(args.folds_out) + rows, selection, costs, args.out)


if __name__ == "__main__":
    main()
