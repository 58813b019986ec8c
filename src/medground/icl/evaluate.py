"""``medground icl-eval``: Dice and HD95 against k on held-out sources, our model vs baselines (a), (b), (c).

Protocol: every model (RidgeSeg or PoolSeg; its rows are labelled by its architecture, e.g.
"ridgeseg", "ridgeseg+text", "ridgeseg+adapt") is given as ``HELD:FOLDER``, a model trained without the comma-separated sources
HELD, and is evaluated only on tasks of those sources (so every number is out of distribution). For
each such task and each k with k < n (task size), ``draws`` random supports are drawn; the queries are
up to ``queries`` other images of the task. Everything is scored at the model's working size S
(predictions and ground truth both thresholded at 0.5). Edge rules: both masks empty -> Dice 1, HD95 0;
exactly one empty -> Dice 0, HD95 = the image diagonal. Per-query rows go to ``results.jsonl``; means
(over tasks of the per-task mean over draws/queries) and spreads (std over draws) to ``summary.json``,
``report.md`` and ``dice_vs_k.png``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from medground.eval.seg_metrics import EmptyRule, MaskScores, score_masks
from medground.icl.adapt import adapt_to_support
from medground.icl.baselines import support_prior, unet_from_scratch
from medground.icl.segmenter import load_pretrained
from medground.icl.tasks import Task, load_tasks
from medground.icl.universeg import UniverSeg, UniverSegConfig

__all__ = ["EMPTY_RULE", "EvalConfig", "evaluate", "parse_fold", "score"]


@dataclass
class EvalConfig:
    """What to evaluate and how."""

    data: list[str] = field(default_factory=list)
    """Data-engine output folders and/or datasets in any layout medground build reads (or their parent)."""
    out: str = "runs/icl/eval"
    """Report folder."""
    ks: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    """Support sizes (0 evaluates our model with text alone)."""
    models: list[str] = field(default_factory=list)
    """Our model's folds as HELD:FOLDER (HELD = comma-separated sources); empty = shipped weights on all sources."""
    universeg: list[str] = field(default_factory=list)
    """UniverSeg folds as HELD:FOLDER (baseline c)."""
    draws: int = 5
    """Random support draws per task and k."""
    queries: int = 4
    """Queries per draw."""
    unet_steps: int = 60
    """Steps of the from-scratch U-Net (baseline b); 0 skips it."""
    adapt_steps: int = 0
    """If > 0, also evaluate our model fine-tuned on each support set for this many steps ("<arch>+adapt")."""
    seed: int = 0
    """Seed of the support draws."""
    threads: int = 1
    """torch CPU threads."""


EMPTY_RULE = EmptyRule(both_empty="perfect", one_empty_hd="diagonal")
"""Edge rules of this protocol (see the module docstring), applied by the harness's own metrics."""


def score(pred: np.ndarray, gt: np.ndarray) -> MaskScores:
    """Dice and HD95 (pixels) of two (S, S) bool masks by the evaluation harness, under EMPTY_RULE."""
    return score_masks(pred, gt, rule=EMPTY_RULE)


def _metrics(scores: MaskScores) -> dict[str, float]:
    return {"dice": scores.dice, "hd95": scores.hd95}


def parse_fold(spec: str) -> tuple[list[str], Path]:
    """ "src1,src2:/path/model" -> (["src1", "src2"], Path("/path/model"))."""
    if ":" not in spec:
        raise ValueError(
            f"a fold is HELD:FOLDER (e.g. ph2_dermoscopy,hc18_fetal_ultrasound:runs/icl/foldA), got {spec!r}"
        )
    held, folder = spec.split(":", 1)
    return [h for h in held.split(",") if h], Path(folder)


def _load_universeg(folder: Path) -> UniverSeg:
    from safetensors.torch import load_file

    net = UniverSeg(UniverSegConfig.from_json(folder / "config.json"))
    net.load_state_dict(load_file(str(folder / "model.safetensors")))
    return net.eval()


@torch.no_grad()
def _predict(
    method: str, models: dict, task: Task, sup: torch.Tensor, qry: torch.Tensor, text_vec, seed: int
) -> torch.Tensor:
    """Probabilities (Q, 1, S, S) of one method for queries ``qry`` given support indices ``sup``."""
    images, masks, queries = task.images[sup], task.masks[sup], task.images[qry]
    if method == "prior":
        return support_prior(masks, len(qry))
    if method == "unet":
        with torch.enable_grad():
            return unet_from_scratch(images, masks, queries, steps=models["unet_steps"], seed=seed)
    if method == "universeg":
        gray = queries.mean(1, keepdim=True)[:, None]  # (Q, 1, 1, S, S)
        sup_g = images.mean(1, keepdim=True)[None].expand(len(qry), -1, -1, -1, -1)
        return torch.sigmoid(
            models["universeg"](gray, sup_g, masks[None].expand(len(qry), -1, -1, -1, -1))[:, 0]
        )
    text = text_vec[None] if method.endswith("+text") else None
    net = models["icl"]
    if method.endswith("+adapt"):
        net = adapt_to_support(net, images, masks, steps=models["adapt_steps"], seed=seed)
    ctx = net.encode_support(images[None], masks[None], text)
    return torch.sigmoid(net.segment(queries[None], ctx)[0])


def _methods(models: dict, k: int) -> list[str]:
    ours = models["icl"].architecture
    if k == 0:
        return [f"{ours}+text"]
    names = [ours, f"{ours}+text", "prior"] + (["unet"] if models["unet_steps"] > 0 else [])
    names += [f"{ours}+adapt"] if models["adapt_steps"] > 0 else []
    return names + (["universeg"] if "universeg" in models else [])


def _eval_task(task: Task, models: dict, cfg: EvalConfig, text_vec: torch.Tensor, rows: list[dict]) -> None:
    n = len(task)
    for k in cfg.ks:
        if k >= n:
            continue
        for draw in range(cfg.draws):
            gen = torch.Generator().manual_seed(cfg.seed * 7919 + draw * 31 + k)
            perm = torch.randperm(n, generator=gen)
            sup, qry = perm[:k], perm[k : k + cfg.queries]
            gt = task.masks[qry, 0].numpy() >= 0.5
            for method in _methods(models, k):
                prob = _predict(method, models, task, sup, qry, text_vec, seed=draw)[:, 0].numpy()
                for i, q in enumerate(qry.tolist()):
                    pred = prob[i] >= 0.5
                    rows.append(
                        {
                            "fold": models["fold"],
                            "task": task.name,
                            "source": task.source,
                            "k": k,
                            "draw": draw,
                            "method": method,
                            "query": task.ids[q],
                            **_metrics(score(pred, gt[i])),
                        }
                    )


def _common_rows(rows: list[dict]) -> list[dict]:
    """Rows of the tasks evaluated at every k > 0 of the run, so means at different k compare like with like."""
    ks = {r["k"] for r in rows if r["k"] > 0}
    per_task = defaultdict(set)
    for r in rows:
        per_task[r["task"]].add(r["k"])
    keep = {t for t, seen in per_task.items() if ks <= seen}
    return [r for r in rows if r["task"] in keep]


def _summarise(rows: list[dict]) -> dict:
    """summary[method][k] = {dice, dice_std_draws, hd95, tasks}: mean over tasks of per-task means."""
    per = defaultdict(list)
    for r in rows:
        per[(r["method"], r["k"], r["task"], r["draw"])].append((r["dice"], r["hd95"]))
    draw_means = defaultdict(list)
    for (method, k, task, _), vals in per.items():
        draw_means[(method, k, task)].append(np.mean(vals, axis=0))
    summary: dict = defaultdict(dict)
    by_mk = defaultdict(list)
    for (method, k, _task), vals in draw_means.items():
        arr = np.array(vals)
        by_mk[(method, k)].append((arr[:, 0].mean(), arr[:, 0].std(), arr[:, 1].mean()))
    for (method, k), vals in sorted(by_mk.items()):
        arr = np.array(vals)
        summary[method][k] = {
            "dice": float(arr[:, 0].mean()),
            "dice_std_draws": float(arr[:, 1].mean()),
            "hd95": float(arr[:, 2].mean()),
            "tasks": len(vals),
        }
    return dict(summary)


def evaluate(cfg: EvalConfig, text_encoder=None) -> Path:
    """Run the protocol of the module docstring; returns the report folder.

    ``text_encoder`` (``.encode(list[str]) -> (N, 384)``) defaults to the bundled all-MiniLM-L6-v2.
    """
    from tqdm import tqdm

    from medground.icl.report import write_report
    from medground.icl.text import TextEncoder

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    folds = [parse_fold(s) for s in cfg.models] or [([], Path(__file__).resolve().parent / "weights")]
    ufolds = {tuple(sorted(h)): f for h, f in map(parse_fold, cfg.universeg)}
    encoder, rows = text_encoder or TextEncoder(), []
    for held, folder in folds:
        model = load_pretrained(folder)
        models = {
            "icl": model,
            "unet_steps": cfg.unet_steps,
            "adapt_steps": cfg.adapt_steps,
            "fold": ",".join(held) or "all",
        }
        if tuple(sorted(held)) in ufolds:
            models["universeg"] = _load_universeg(ufolds[tuple(sorted(held))])
        tasks = [
            t for t in load_tasks(cfg.data, model.config.size, min_examples=2) if not held or t.source in held
        ]
        for task in tqdm(tasks, desc=f"icl-eval held out: {models['fold']}"):
            _eval_task(task, models, cfg, encoder.encode([task.text])[0], rows)
    with (out / "results.jsonl").open("w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows)
    summary, common = _summarise(rows), _summarise(_common_rows(rows))
    payload = {"config": asdict(cfg), "summary": summary, "summary_common_tasks": common}
    (out / "summary.json").write_text(json.dumps(payload, indent=2) + "\n")
    write_report(summary, rows, out, common)
    return out
