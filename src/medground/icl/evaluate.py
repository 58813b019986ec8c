"""``medground icl-eval``: Dice and HD95 against k on held-out sources, our model vs baselines (a) and (b).

Protocol (each point is a rule a reader can check in ``results.jsonl``):
- **Held out by domain.** A model is given as ``HELD:FOLDER`` (trained without the comma-separated
  sources HELD) or as a bare folder whose ``meta.json`` lists the tasks it trained on (the shipped
  weights by default). Its held-out sources are those that neither it nor any member of their domain
  group (:mod:`medground.icl.protocol`) trained on; unknown HELD names are an error naming the known
  sources. With ``in_distribution`` the trained sources are scored too, in a table of their own.
- **Patients apart.** Supports never come from the query's patient. A draw picks a query patient (a
  different one per draw, cycling), up to ``queries`` of its images, and a random order of the
  images of all other patients; the support at k is the first k of that order (nested across k), so
  every k scores the same queries. Tasks whose patients are unknown (``SegTarget.cases`` has None) are
  drawn with each image as its own unit and reported apart, never mixed into the main table.
- **Same tasks at every k.** A task is evaluated only if it qualifies for the largest k (at least
  k_max images outside its largest patient); the others are listed with the reason. Every table and
  the figure compare all methods on one task set.
- **Scored at the query's resolution.** Each method's (S, S) probability map becomes logits, is
  resized bilinearly to the query's own (H, W) (as ``segment`` returns masks) and thresholded at 0.5;
  the truth is the query's full-resolution mask. Edge rules: both empty -> Dice 1, HD95 0; one empty
  -> Dice 0, HD95 = the image diagonal (pixels of the query).
- **Intervals over tasks and patients.** Means are over tasks of the per-task mean over rows; 95%
  intervals come from a hierarchical bootstrap (:mod:`medground.icl.stats`) that resamples the tasks,
  then the query patients within each drawn task (same resamples for every method and k, so
  differences are paired).
- **Baselines must pass a sanity check.** (a) the mean of the support masks, (b) a small U-Net fitted
  on the supports: the report states, per method, whether Dice at the largest k beats Dice at k = 1
  (with its interval). (c) UniverSeg is scored when ``--model`` names a folder that ``icl-train
  --architecture universeg`` wrote (method "universeg", no text: it takes none); it counts as a
  baseline only if it passes the same check.
- **Text beside supports as a user gets it.** "<arch>+text" passes the structure's name with the
  supports through the model's own ``encode_support``, so RidgeSeg's text rule (keep the text only
  where leave-one-out over the supports says it does not hurt; never at k = 1) applies exactly as in
  ``medground segment``; each such row records ``text_used`` (whether the rule kept the text).
Outputs: ``results.jsonl`` (one row per query), ``summary.json``, ``report.md``, ``dice_vs_k.png``.
"""

from __future__ import annotations

import json
import zlib
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from medground.eval.seg_metrics import EmptyRule, MaskScores, score_masks
from medground.icl.adapt import adapt_to_support
from medground.icl.baselines import UNET_STEPS, support_prior, unet_from_scratch
from medground.icl.preprocess import resize_back
from medground.icl.protocol import domain_group, expand_held_out, not_trained_on
from medground.icl.segmenter import load_pretrained
from medground.icl.stats import Resamples, hierarchical_interval
from medground.icl.targets import SegTarget, load_targets
from medground.icl.universeg import UniverSeg

__all__ = [
    "EMPTY_RULE",
    "EvalConfig",
    "Fold",
    "draw_plan",
    "evaluate",
    "parse_fold",
    "qualifies",
    "score",
    "write_outputs",
]


@dataclass
class EvalConfig:
    """What to evaluate and how."""

    data: list[str] = field(default_factory=list)
    """Data-engine output folders and/or datasets in any layout medground build reads (or their parent)."""
    out: str = "runs/icl/eval"
    """Report folder."""
    ks: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    """Support sizes (0 evaluates our model with text alone)."""
    models: list[str] = field(default_factory=list)
    """Our model's folds as HELD:FOLDER or FOLDER (held-out = not trained on, from its meta.json);
    empty = the shipped weights."""
    draws: int = 5
    """Draws (query patient + support order) per task."""
    queries: int = 4
    """Queries per draw, all from the draw's query patient."""
    unet_steps: int = UNET_STEPS
    """Steps of the from-scratch U-Net (baseline b); 0 skips it."""
    adapt_steps: int = 0
    """If > 0, also evaluate our model fine-tuned on each support set for this many steps ("<arch>+adapt")."""
    in_distribution: bool = False
    """Also score the sources the model trained on (own table)."""
    min_patients: int = 0
    """Score only tasks with at least this many known patients (k = 16 needs 17); 0 = no such rule."""
    bootstrap: int = 1000
    """Hierarchical bootstrap resamples (tasks, then query patients) for the 95% intervals."""
    seed: int = 0
    """Seed of the draws and the bootstrap."""
    threads: int = 1
    """torch CPU threads."""
    size: int | None = None
    """Working resolution of our model (RidgeSeg only); None: the size in its config.json."""


EMPTY_RULE = EmptyRule(both_empty="perfect", one_empty_hd="diagonal")
"""Edge rules of this protocol (see the module docstring), applied by the harness's own metrics."""


def score(pred: np.ndarray, gt: np.ndarray) -> MaskScores:
    """Dice and HD95 (pixels) of two (H, W) bool masks by the evaluation harness, under EMPTY_RULE."""
    return score_masks(pred, gt, rule=EMPTY_RULE)


def parse_fold(spec: str) -> tuple[list[str] | None, Path]:
    """ "src1,src2:/path/model" -> (["src1", "src2"], Path("/path/model")); "/path/model" -> (None, path)."""
    if ":" not in spec:
        if not Path(spec).is_dir():
            raise ValueError(
                f"a model is HELD:FOLDER (e.g. ph2_dermoscopy,hc18_fetal_ultrasound:runs/icl/foldA) or a model "
                f"FOLDER whose meta.json lists its training tasks; got {spec!r}"
            )
        return None, Path(spec)
    held, folder = spec.split(":", 1)
    return [h for h in held.split(",") if h], Path(folder)


@dataclass
class Fold:
    """One model and the sources it is scored on: ``roles[source]`` = "held-out" | "in-distribution";
    ``design_seen``: sources (with their domain groups) looked at while the architecture was designed."""

    name: str
    folder: Path
    roles: dict[str, str]
    design_seen: set[str]


def _trained_sources(folder: Path) -> set[str] | None:
    meta = folder / "meta.json"
    if not meta.is_file():
        return None
    tasks = json.loads(meta.read_text()).get("tasks")
    return None if tasks is None else {name.split("/")[0] for name in tasks}


def _design_seen(folder: Path) -> set[str]:
    meta = folder / "meta.json"
    names = json.loads(meta.read_text()).get("seen_in_design", []) if meta.is_file() else []
    return {member for name in names for member in domain_group(name)}


def _fold(spec: str | None, sources: set[str], in_distribution: bool) -> Fold:
    """Which loaded sources a model is held out from (and, with ``in_distribution``, trained on)."""
    held, folder = parse_fold(spec) if spec else (None, Path(__file__).resolve().parent / "weights")
    trained = _trained_sources(folder)
    if held is None and trained is None:
        raise ValueError(
            f"{folder}: meta.json does not list the tasks this model trained on; give it as HELD:{folder}"
        )
    if trained is None:
        trained = sources - expand_held_out(held or [], sources)
    held_set = not_trained_on(sources, trained)
    if held is not None:
        held_set &= expand_held_out(held, sources)
    roles = {s: "held-out" for s in held_set}
    if in_distribution:
        near = {member for name in trained for member in domain_group(name)}
        roles.update({s: "in-distribution" for s in sources & near})
    return Fold(",".join(held) if held else str(folder), folder, roles, _design_seen(folder))


def _units(task: SegTarget) -> list[str]:
    """Patient key of every example; an unknown patient makes each image its own unit."""
    if task.patients_known:
        return [str(c) for c in task.cases]
    return [f"image:{i}" for i in task.ids]


def qualifies(task: SegTarget, k: int, min_patients: int = 0) -> tuple[bool, str]:
    """Whether every patient of the task can be a query with k supports from other patients (and the
    task has at least ``min_patients`` known patients)."""
    counts: dict[str, int] = defaultdict(int)
    for unit in _units(task):
        counts[unit] += 1
    if min_patients and (not task.patients_known or len(counts) < min_patients):
        known = f"{len(counts)} patients" if task.patients_known else "patients unknown"
        return False, f"{known}, fewer than the {min_patients} patients required"
    largest = max(counts.values())
    others = len(task) - largest
    if others >= k:
        return True, ""
    return False, (
        f"{len(task)} images from {len(counts)} {'patients' if task.patients_known else 'images (patients unknown)'}: "
        f"only {others} outside the largest patient, k = {k} needs {k}"
    )


def draw_plan(task: SegTarget, draws: int, queries: int, seed: int) -> list[tuple[list[int], list[int], str]]:
    """[(query indices, support order, query patient)] for each draw; supports at k = order[:k].

    The query patient of draw d is the d-th of a seeded random order of patients (cycling); its
    queries are up to ``queries`` of its images; the support order is a random permutation of the
    images of all other patients. Depends on the task name and seed only, not on k or the method.
    """
    units = _units(task)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(task.name.encode()))
    patients = sorted(set(units))
    order = [patients[i] for i in torch.randperm(len(patients), generator=gen).tolist()]
    plan = []
    for d in range(draws):
        patient = order[d % len(order)]
        mine = [i for i, u in enumerate(units) if u == patient]
        others = [i for i, u in enumerate(units) if u != patient]
        qry = [mine[i] for i in torch.randperm(len(mine), generator=gen)[:queries].tolist()]
        sup = [others[i] for i in torch.randperm(len(others), generator=gen).tolist()]
        plan.append((qry, sup, patient))
    return plan


@torch.no_grad()
def _predict(
    method: str, models: dict, task: SegTarget, sup: list[int], qry: list[int], text_vec, seed: int
) -> tuple[torch.Tensor, bool | None]:
    """Probabilities (Q, 1, S, S) of one method for queries ``qry`` given support indices ``sup``, and
    for a "+text" method whether the text was used (the model's text rule may drop it; else None)."""
    images, masks, queries = task.images[sup], task.masks[sup], task.images[qry]
    if method == "prior":
        return support_prior(masks, len(qry)), None
    if method == "unet":
        with torch.enable_grad():
            return unet_from_scratch(images, masks, queries, steps=models["unet_steps"], seed=seed), None
    with_text = method.endswith("+text")
    net = models["icl"]
    if method.endswith("+adapt"):
        net = adapt_to_support(net, images, masks, steps=models["adapt_steps"], seed=seed)
    ctx = net.encode_support(images[None], masks[None], text_vec[None] if with_text else None)
    used = getattr(ctx, "text_used", None)
    kept = (bool(used[0]) if used is not None else True) if with_text else None
    return torch.sigmoid(net.segment(queries[None], ctx)[0]), kept


def _methods(models: dict, k: int) -> list[str]:
    ours = models["icl"].architecture
    texted = [] if isinstance(models["icl"], UniverSeg) else [f"{ours}+text"]
    if k == 0:
        return texted
    names = [ours, *texted, "prior"] + (["unet"] if models["unet_steps"] > 0 else [])
    return names + ([f"{ours}+adapt"] if models["adapt_steps"] > 0 else [])


def _at_query_size(prob: torch.Tensor, height: int, width: int) -> np.ndarray:
    """(S, S) probabilities -> (height, width) bool mask: logits resized bilinearly, then p >= 0.5."""
    logit = torch.logit(prob.double().clamp(1e-6, 1 - 1e-6))
    return resize_back(logit, height, width) >= 0.5


def _eval_task(
    task: SegTarget, models: dict, cfg: EvalConfig, text_vec, base: dict, rows: list[dict]
) -> None:
    assert task.full_masks is not None
    for draw, (qry, order, patient) in enumerate(draw_plan(task, cfg.draws, cfg.queries, cfg.seed)):
        for k in cfg.ks:
            sup = order[:k]
            for method in _methods(models, k):
                prob, text_used = _predict(method, models, task, sup, qry, text_vec, seed=draw)
                for i, q in enumerate(qry):
                    truth = task.full_masks[q]
                    pred = _at_query_size(prob[i, 0], *truth.shape)
                    scores = score(pred, truth)
                    rows.append(
                        {
                            **base,
                            "k": k,
                            "draw": draw,
                            "method": method,
                            "query": task.ids[q],
                            "patient": patient,
                            "dice": scores.dice,
                            "hd95": scores.hd95,
                            "text_used": text_used,
                        }
                    )


def summarise(rows: list[dict], n_boot: int, seed: int) -> dict:
    """summary[method][k] = {dice, lo, hi, hd95, tasks, patients}: mean over tasks of per-task row means,
    95% interval from a hierarchical bootstrap (:mod:`medground.icl.stats`): tasks resampled, then each
    drawn task's query patients; the same resamples for every method and k (paired), except for a
    method scored on fewer tasks, which gets its own over those."""
    clusters: dict[str, list[str]] = defaultdict(list)
    cells: dict[tuple[str, int, str, str], list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if r["patient"] not in clusters[r["task"]]:
            clusters[r["task"]].append(r["patient"])
        cells[(r["method"], r["k"], r["task"], r["patient"])].append((r["dice"], r["hd95"]))
    tasks = sorted(clusters)
    shared = Resamples.draw([len(clusters[t]) for t in tasks], n_boot, seed)
    summary: dict = defaultdict(dict)
    for method, k in sorted({(m, k) for m, k, _, _ in cells}):
        present = [t for t in tasks if (method, k, t, clusters[t][0]) in cells]
        by_task = [[cells[(method, k, t, p)] for p in clusters[t]] for t in present]
        sums = [np.array([sum(d for d, _ in c) for c in patients]) for patients in by_task]
        sizes = [np.array([len(c) for c in patients]) for patients in by_task]
        draws = (
            shared if len(present) == len(tasks) else Resamples.draw([len(c) for c in by_task], n_boot, seed)
        )
        lo, hi = hierarchical_interval(sums, sizes, draws)
        summary[method][k] = {
            "dice": float(np.mean([s.sum() / n.sum() for s, n in zip(sums, sizes, strict=True)])),
            "lo": lo,
            "hi": hi,
            "hd95": float(np.mean([np.mean([h for c in patients for _, h in c]) for patients in by_task])),
            "tasks": len(present),
            "patients": int(sum(len(clusters[t]) for t in present)),
        }
    return dict(summary)


def _gain_check(rows: list[dict], ks: list[int], n_boot: int, seed: int) -> dict[str, dict]:
    """Per method: Dice(k_max) - Dice(k_min > 0) with a paired bootstrap interval; passes if the
    interval lies above 0 (the sanity check a baseline needs)."""
    ks = sorted(k for k in ks if k > 0)
    if len(ks) < 2:
        return {}
    lo_k, hi_k = ks[0], ks[-1]
    out = {}
    for method in sorted({r["method"] for r in rows if r["k"] in (lo_k, hi_k)}):
        diff_rows = []
        at = {
            (r["task"], r["draw"], r["query"]): r["dice"]
            for r in rows
            if r["method"] == method and r["k"] == lo_k
        }
        for r in rows:
            if r["method"] == method and r["k"] == hi_k and (r["task"], r["draw"], r["query"]) in at:
                diff_rows.append(
                    {**r, "dice": r["dice"] - at[(r["task"], r["draw"], r["query"])], "hd95": 0.0}
                )
        if not diff_rows:
            continue
        s = summarise(diff_rows, n_boot, seed)[method][hi_k]
        out[method] = {
            "k_min": lo_k,
            "k_max": hi_k,
            "gain": s["dice"],
            "lo": s["lo"],
            "hi": s["hi"],
            "passes": s["lo"] > 0,
        }
    return out


def write_outputs(
    rows: list[dict], cfg: EvalConfig, excluded: list[dict], skipped: list[dict], out: Path
) -> dict:
    """Write results.jsonl, summary.json, report.md and dice_vs_k.png for result rows (one evaluation
    or several pooled, e.g. the folds of bench_icl_folds.py); returns summary.json's payload."""
    from medground.icl.report import table_rows, write_report

    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.jsonl").open("w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows)
    tables = table_rows(rows)
    payload = {
        "config": asdict(cfg),
        "summaries": {name: summarise(t, cfg.bootstrap, cfg.seed) for name, t in tables.items()},
        "gain_checks": {name: _gain_check(t, cfg.ks, cfg.bootstrap, cfg.seed) for name, t in tables.items()},
        "excluded_tasks": excluded,
        "skipped": skipped,
    }
    (out / "summary.json").write_text(json.dumps(payload, indent=2) + "\n")
    write_report(payload, rows, out)
    return payload


def evaluate(cfg: EvalConfig, text_encoder=None) -> Path:
    """Run the protocol of the module docstring; returns the report folder.

    ``text_encoder`` (``.encode(list[str]) -> (N, 384)``) defaults to the bundled all-MiniLM-L6-v2.
    """
    from tqdm import tqdm

    from medground.icl.text import TextEncoder

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    encoder, rows, excluded = text_encoder or TextEncoder(), [], []
    k_max = max(cfg.ks)
    loaded_by_size: dict[int, object] = {}
    skipped: list[dict] = []
    for spec in cfg.models or [None]:
        folder = parse_fold(spec)[1] if spec else Path(__file__).resolve().parent / "weights"
        model = load_pretrained(folder, with_baselines=True, size=cfg.size)
        if isinstance(model, UniverSeg) and 0 in cfg.ks:
            raise ValueError(
                f"{folder}: UniverSeg takes no text, so it cannot be scored at k = 0; drop 0 from --k"
            )
        size = model.config.size
        if size not in loaded_by_size:
            loaded = load_targets(cfg.data, size, min_examples=2, keep_full=True)
            print(loaded.summary())
            skipped += [s.as_dict() for s in loaded.skipped]
            loaded_by_size[size] = loaded
        tasks = loaded_by_size[size].tasks
        fold = _fold(spec, {t.source for t in tasks}, cfg.in_distribution)
        models = {"icl": model, "unet_steps": cfg.unet_steps, "adapt_steps": cfg.adapt_steps}
        chosen = []
        for task in (t for t in tasks if t.source in fold.roles):
            ok, why = qualifies(task, k_max, cfg.min_patients)
            if ok:
                chosen.append(task)
            else:
                excluded.append({"fold": fold.name, "task": task.name, "reason": why})
        for task in tqdm(chosen, desc=f"icl-eval {fold.name}"):
            base = {
                "fold": fold.name,
                "task": task.name,
                "source": task.source,
                "role": fold.roles[task.source],
                "patients_known": task.patients_known,
                "design_seen": task.source in fold.design_seen,
            }
            _eval_task(task, models, cfg, encoder.encode([task.text])[0], base, rows)
    write_outputs(rows, cfg, excluded, skipped, out)
    if excluded or skipped:
        print(
            f"icl-eval: {len(excluded)} tasks not evaluated (too few images outside one patient for k = {k_max}), "
            f"{len(skipped)} items skipped while loading; both listed in {out / 'report.md'}"
        )
    return out
