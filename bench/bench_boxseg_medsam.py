"""Benchmark: box -> mask with the pretrained LiteMedSAM (as shipped) against the box-prompt baselines.

Protocol, written before any LiteMedSAM score on this data was seen (2026-12-08):
- Data: ``medground build /work/shared/data/medseg/*/`` (seed 0), every split (the build's test split
  holds only 6 datasets, those that name patients, so it cannot score the collection; this was changed
  before any score was seen). LiteMedSAM never trained on this build (but MedSAM's training mix may hold
  some of these public datasets: see the contamination table in bench/RESULTS.md); the shipped BoxSeg
  trained on the train + val splits of every dataset, so on those instances it is an optimistic
  (in-distribution) baseline. One region = one instance; at most ``MAX_INSTANCES`` per dataset (seed 0;
  10, against bench_boxseg.py's 60, to fit the loaded 2-core VM's time), Dice at the image's own resolution,
  mask = probability >= 0.5.
- Boxes: tight, and each side moved by up to 10% of the box's width/height (seed 1), as bench_boxseg.py.
- Methods: LiteMedSAM as shipped (``medground.vision``), the box filled, the inscribed ellipse, GrabCut
  (OpenCV, 5 iterations, BoxSeg's crop window) and the shipped BoxSeg v2 (the current box model).
- Datasets whose regions fill on average less than 1/4 of their box (vessel trees: drive, fives) are
  reported apart and left out of the overall means. Overall = mean of dataset means; 95% intervals:
  bootstrap over patients where the dataset names them, else images (bench_boxseg.summarise).
- Ship rule: LiteMedSAM is the default engine of a box alone if its overall tight-box mean is >= both the
  shipped BoxSeg's and the ellipse's; otherwise BoxSeg stays the default and LiteMedSAM an option.
- Timing: CPU seconds of each encoder call (distinct images, so no cache hits) and of each box decode,
  one torch thread.

    nice .venv/bin/python bench/bench_boxseg_medsam.py /work/runs_vision/data --out /work/runs_vision/boxseg_medsam
    (or several processes with --sources A,B --out DIR_i, then --merge DIR_1 DIR_2 ... --out DIR)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from bench_boxseg import _unit, dice, summarise

from medground.icl.boxprompt import (
    box_ellipse,
    box_fill,
    box_grabcut,
    crop_window,
    load_boxseg,
    segment_boxes,
)
from medground.icl.boxtrain import jitter_box, load_box_data
from medground.vision.predictor import ImageEncoder

MAX_INSTANCES, SEED, JITTER, JITTER_SEED, MIN_FILL = 10, 0, 0.1, 1, 0.25
METHODS = ("litemedsam", "boxseg", "fill", "ellipse", "grabcut")


def score(data, sources: list[str], encoder: ImageEncoder, out: Path) -> None:
    """Write one JSON row per instance to ``out/rows.jsonl`` (resumes: sources already there are skipped)."""
    boxseg = load_boxseg()
    rows_path = out / "rows.jsonl"
    done = (
        {json.loads(line)["source"] for line in rows_path.read_text().splitlines()}
        if rows_path.exists()
        else set()
    )
    for source in sources:
        if source in done:
            continue
        pool = [e for e in data.examples if e.source == source]
        pick = sorted(np.random.default_rng(SEED).permutation(len(pool))[:MAX_INSTANCES])
        jit_rng = np.random.default_rng(JITTER_SEED)
        rows = []
        for i in pick:
            e = pool[i]
            image = data.images[e.image]
            h, w = image.shape[:2]
            truth = data.full_mask(e)
            row = {"source": source, "unit": _unit(e, data), "region": e.region}
            row["fill_fraction"] = float(e.mask.mean())
            misses, start = encoder.cache.misses, time.process_time()
            emb = encoder.embed(image)
            if encoder.cache.misses > misses:  # encoded now, not served from the cache
                row["encode_cpu_s"] = time.process_time() - start
            for kind, box in (("tight", e.box), ("jitter", jitter_box(e.box, h, w, JITTER, jit_rng))):
                start = time.process_time()
                prob = encoder.predict_boxes(emb, [box])[0][0]
                row[f"{kind}/decode_cpu_s"] = time.process_time() - start
                row[f"{kind}/litemedsam"] = dice(prob >= 0.5, truth)
                row[f"{kind}/boxseg"] = dice(segment_boxes(boxseg, image, [box])[0] >= 0.5, truth)
                window = crop_window(box, boxseg.config.margin, boxseg.config.pad)
                row[f"{kind}/fill"] = dice(box_fill(box, h, w), truth)
                row[f"{kind}/ellipse"] = dice(box_ellipse(box, h, w), truth)
                row[f"{kind}/grabcut"] = dice(box_grabcut(image, box, 5, window), truth)
            rows.append(row)
        with rows_path.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        print(f"{source}: {len(rows)} instances", flush=True)


def report(rows: list[dict]) -> dict:
    """Summary per dataset (bench_boxseg.summarise), the overall means with thin structures apart, timings."""
    fills = {
        s: np.mean([r["fill_fraction"] for r in rows if r["source"] == s])
        for s in {r["source"] for r in rows}
    }
    scored = [r for r in rows if fills[r["source"]] >= MIN_FILL]
    apart = [r for r in rows if fills[r["source"]] < MIN_FILL]
    summary = summarise(scored)
    summary["apart"] = summarise(apart) if apart else {}
    summary["mean_fill"] = {s: float(f) for s, f in sorted(fills.items())}
    enc = [r["encode_cpu_s"] for r in rows if "encode_cpu_s" in r]
    dec = [r["tight/decode_cpu_s"] for r in rows]
    summary["timing"] = {
        "encode_cpu_s": {"median": float(np.median(enc)), "n": len(enc)},
        "decode_cpu_s": {
            "median": float(np.median(dec)),
            "p95": float(np.percentile(dec, 95)),
            "n": len(dec),
        },
    }
    overall = summary["overall"]
    lite = overall["tight/litemedsam"]["mean"]
    summary["ship"] = {
        "rule": "litemedsam default iff overall tight mean >= shipped boxseg's and >= ellipse's",
        "litemedsam": lite,
        "boxseg": overall["tight/boxseg"]["mean"],
        "ellipse": overall["tight/ellipse"]["mean"],
        "litemedsam_default": lite >= overall["tight/boxseg"]["mean"]
        and lite >= overall["tight/ellipse"]["mean"],
    }
    per = summary["per_dataset"]
    summary["per_dataset_below_ellipse_by_more_than_0.02"] = [
        s for s in per if per[s]["tight/litemedsam"]["mean"] < per[s]["tight/ellipse"]["mean"] - 0.02
    ]
    return summary


NAMED_KIND = {
    "brats2021_flair_mr",
    "edd2020_endoscopy_disease",
    "kvasir_seg_endoscopy",
    "ph2_dermoscopy",
    "shenzhen_cxr_lung_xray",
}
"""Datasets of a kind issue 23 names as in MedSAM's training mix (README's contamination table)."""


def markdown(summary: dict) -> str:
    """The per-dataset table (tight and jittered boxes) and the overall rows, as markdown."""
    cols = [f"{k}/{m}" for k in ("tight", "jitter") for m in METHODS]
    head = "| dataset | n | units | " + " | ".join(c.replace("/", " ") for c in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 3)]

    def row(name: str, s: dict) -> str:
        cells = []
        for c in cols:
            v = s[c]
            ci = v.get("ci")
            cells.append(
                f"{v['mean']:.3f}"
                + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if c == "tight/litemedsam" and ci else "")
            )
        star = " *" if name in NAMED_KIND else ""
        return f"| {name}{star} | {s['instances']} | {s['units']} {s['unit']}s | " + " | ".join(cells) + " |"

    for part in (summary["per_dataset"], summary["apart"].get("per_dataset", {})):
        lines += [row(n, s) for n, s in sorted(part.items())]
    for label, names in (
        ("overall (mean of dataset means, fill >= 1/4)", list(summary["per_dataset"])),
        (
            "overall, datasets not of a kind named in MedSAM's mix",
            [n for n in summary["per_dataset"] if n not in NAMED_KIND],
        ),
    ):
        means = [np.mean([summary["per_dataset"][n][c]["mean"] for n in names]) for c in cols]
        lines.append(f"| **{label}** ({len(names)}) | | | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="medground build output of the shared 2D collection")
    parser.add_argument("--out", type=Path, default=Path("runs/boxseg_medsam"))
    parser.add_argument("--sources", default="", help="comma-separated datasets (default: all in the build)")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=None,
        help="only report: concatenate these earlier --out folders' rows (runs split by --sources) into --out",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge is not None:
        text = "".join((d / "rows.jsonl").read_text() for d in args.merge)
        (args.out / "rows.jsonl").write_text(text)
    else:
        data = load_box_data(args.data)
        sources = [s for s in args.sources.split(",") if s] or sorted({e.source for e in data.examples})
        encoder = ImageEncoder.from_pretrained(cache_bytes=8 * 2**20)  # two embeddings: one image's regions
        score(data, sources, encoder, args.out)
    rows = [json.loads(line) for line in (args.out / "rows.jsonl").read_text().splitlines()]
    summary = report(rows)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("overall", "ship", "timing", "mean_fill")}, indent=2))
    print(markdown(summary))


if __name__ == "__main__":
    main()
