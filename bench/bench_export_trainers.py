"""Benchmark (issue 26 Numbers): every export format x dialect, loaded the way its trainer loads it, every
box decoded in the frame the trainer feeds the model and compared with its mask's box in that frame.

Each trainer's data path (LLaMA-Factory, ms-swift incl. its ``objects`` form, LLaVA, InternVL, HF datasets,
WebDataset) and pixel rule is re-implemented from its source in ``tests/data/_trainer_loaders.py``
(citations there; Qwen2-VL's ``smart_resize`` is transformers' own). Two settings per trainer: its default
cap and 262144 pixels (LLaMA-Factory's VL examples' ``image_max_pixels``, ms-swift ``MAX_PIXELS``); the
export's ``--max-pixels`` is set to the trainer's cap, as the export's printed line asks. A fed box is
matched to the region whose fed mask box it overlaps best; boxes whose mask box is under 8 x 8 fed pixels
are exempt and counted. Masks are read with PIL / pycocotools, not medground. Also reported: the silent
failure the issue found (a qwen2.5-vl export at the default budget fed at a 262144 cap) and what
``medground export --check-config`` says about it.

    python bench/bench_export_trainers.py BUILD [--per-source 5] [--work /tmp/bench_export_trainers]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))
from _trainer_loaders import DIALECT_TEXT, LF_DEFAULT, SWIFT_DEFAULT, load_export  # noqa: E402

from medground.data.export import FORMATS, check_config, export  # noqa: E402

CAP = 262144
MIN_SIDE = 8


def subset(build: Path, per_source: int, target: Path) -> list[dict]:
    """The first ``per_source`` records of each source of ``build`` as a build under ``target`` (images and
    masks hard-linked); returns the records."""
    kept: dict[str, list[dict]] = {}
    for path in sorted((build / "records").glob("*.jsonl")):
        for line in path.open():
            record = json.loads(line)
            group = kept.setdefault(record["source"], [])
            if len(group) < per_source:
                group.append(record)
    records = [r for group in kept.values() for r in group]
    (target / "records").mkdir(parents=True)
    with open(target / "records" / "shard-00000.jsonl", "w") as out:
        for record in records:
            files = [record["image"]] + [r["mask"] for r in record["regions"] if r.get("mask")]
            for rel in files:
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                if not (target / rel).exists():
                    os.link(build / rel, target / rel)
            out.write(json.dumps(record) + "\n")
    return records


def _mask(build: Path, region: dict) -> np.ndarray:
    if region.get("rle"):
        from pycocotools import mask as coco_mask

        rle = {"size": region["rle"]["size"], "counts": region["rle"]["counts"].encode()}
        return coco_mask.decode(rle).astype(bool)
    with Image.open(build / region["mask"]) as image:
        return np.asarray(image.convert("L")) > 0


def _fed_box(mask: np.ndarray, fed: tuple[int, int], square: bool) -> list[int] | None:
    """The box of ``mask`` after PIL's nearest-neighbour resize to ``fed`` (fed pixel i takes source pixel
    floor((i + 0.5) * src / dst)); ``square``: centred in a padded square first (LLaVA). Only the fed rows
    and columns that sample the mask's own box are looked at."""
    h, w = mask.shape
    oy = ox = 0
    if square:
        side = max(w, h)
        oy, ox, h, w = (side - h) // 2, (side - w) // 2, side, side
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    if not len(rows):
        return None
    ys = np.floor((np.arange(fed[1]) + 0.5) * h / fed[1]).astype(int) - oy
    xs = np.floor((np.arange(fed[0]) + 0.5) * w / fed[0]).astype(int) - ox
    fy = np.nonzero((ys >= rows[0]) & (ys <= rows[-1]))[0]
    fx = np.nonzero((xs >= cols[0]) & (xs <= cols[-1]))[0]
    sampled = mask[np.ix_(ys[fy], xs[fx])]
    r, c = np.nonzero(sampled.any(1))[0], np.nonzero(sampled.any(0))[0]
    if not len(r):
        return None
    return [int(fx[c[0]]), int(fy[r[0]]), int(fx[c[-1]]) + 1, int(fy[r[-1]]) + 1]


def _ious(box: list[float], truth: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], truth[:, 2]) - np.maximum(box[0], truth[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], truth[:, 3]) - np.maximum(box[1], truth[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    union = area + (truth[:, 2] - truth[:, 0]) * (truth[:, 3] - truth[:, 1]) - inter
    return inter / np.maximum(union, 1e-9)


def _scaled_box(mask: np.ndarray, fed: tuple[int, int], square: bool) -> list[float]:
    """The mask's own box [x0, y0, x1, y1) with its edges scaled into the fed frame (no resampling)."""
    h, w = mask.shape
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    box = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
    if square:
        side = max(w, h)
        box = [
            box[0] + (side - w) // 2,
            box[1] + (side - h) // 2,
            box[2] + (side - w) // 2,
            box[3] + (side - h) // 2,
        ]
        w = h = side
    return [box[0] * fed[0] / w, box[1] * fed[1] / h, box[2] * fed[0] / w, box[3] * fed[1] / h]


def score(rows, build: Path, by_id: dict[str, dict], square: bool, masks: dict) -> dict:
    """Rows loaded, boxes checked, boxes exempt, IoU >= 0.9 share and minimum against the resampled mask's
    box, the minimum against the mask's box scaled without resampling, and the fed sizes of the misses."""
    ious, scaled, exempt, misses = [], [], 0, []
    for row in rows:
        record = by_id[row.row_id]
        if record["id"] not in masks:
            masks[record["id"]] = [_mask(build, r) for r in record["regions"]]
        kept = [m for m in masks[record["id"]] if _fed_box(m, row.size, square) is not None]
        truth = np.array([_fed_box(m, row.size, square) for m in kept], float)
        for box in row.boxes:
            values = _ious(box, truth)
            best = int(values.argmax())
            t = truth[best]
            if t[2] - t[0] < MIN_SIDE or t[3] - t[1] < MIN_SIDE:
                exempt += 1
                continue
            ious.append(float(values[best]))
            scaled.append(float(_ious(box, np.array([_scaled_box(kept[best], row.size, square)]))[0]))
            if values[best] < 0.9:
                misses.append(f"{int(t[2] - t[0])}x{int(t[3] - t[1])}")
    array = np.array(ious) if ious else np.ones(1)
    return {
        "rows": len(rows),
        "boxes": len(ious),
        "exempt": exempt,
        "min_iou": float(array.min()),
        "share_ge_0.9": float((array >= 0.9).mean()),
        "wrong": int((array < 0.9).sum()),
        "min_iou_scaled": min(scaled, default=1.0),
        "misses": misses,
    }


def _setting(fmt: str, capped: bool) -> tuple[int, int]:
    lf = fmt in ("llamafactory", "sharegpt")
    if capped:
        return (CAP, LF_DEFAULT[1] if lf else SWIFT_DEFAULT[1])
    return LF_DEFAULT if lf else SWIFT_DEFAULT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", type=Path)
    parser.add_argument("--per-source", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_export_trainers"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    build = args.work / "build"
    records = subset(args.build, args.per_source, build)
    by_id = {r["id"]: r for r in records}
    sizes = [r["width"] * r["height"] for r in records]
    print(
        f"{len(records)} records from {len({r['source'] for r in records})} sources, "
        f"{sum(len(r['regions']) for r in records)} regions, images {min(sizes)}-{max(sizes)} pixels"
    )
    warnings.simplefilter("ignore")
    masks: dict = {}
    results, refused = [], []
    start = time.perf_counter()
    for fmt in FORMATS:
        for dialect in DIALECT_TEXT:
            for capped in (False, True):
                dest = args.work / f"{fmt}-{dialect}-{capped}"
                budget = CAP if capped else LF_DEFAULT[0]
                try:
                    written = export(build, fmt, dest=dest, dialect=dialect, max_pixels=budget)
                except ValueError as error:
                    refused.append((fmt, dialect, str(error).split(";")[0]))
                    break
                rows = load_export(written, fmt, dialect, _setting(fmt, capped), args.work / "hf")
                square = fmt == "llava" and DIALECT_TEXT[dialect][1] != "pixels"
                result = {
                    "format": fmt,
                    "dialect": dialect,
                    "capped": capped,
                    **score(rows, build, by_id, square, masks),
                }
                results.append(result)
                print(
                    f"{fmt:13s} {dialect:18s} {'262144' if capped else 'default':7s} rows {result['rows']}/"
                    f"{len(records)}  boxes {result['boxes']:5d} (+{result['exempt']} exempt)  "
                    f"min IoU {result['min_iou']:.3f}  >= 0.9: {100 * result['share_ge_0.9']:.1f}%  "
                    f"(vs the scaled box: min {result['min_iou_scaled']:.3f}; fed sizes under 0.9: "
                    f"{' '.join(result['misses']) or '-'})"
                )
                shutil.rmtree(dest, ignore_errors=True)
    print(f"\n{len(results)} format x dialect x setting runs in {time.perf_counter() - start:.0f} s")
    for fmt, dialect, reason in refused:
        print(f"refused: {fmt} x {dialect}: {reason}")
    bad = [r for r in results if r["rows"] != len(records) or r["wrong"]]
    print(f"runs with a missing row or a box under 0.9: {len(bad)}")

    print("\nThe issue's silent failure: qwen2.5-vl exported at the default budget (768*768), fed at 262144:")
    for fmt in ("llamafactory", "swift"):
        written = export(build, fmt, dest=args.work / f"mismatch-{fmt}", dialect="qwen2.5-vl-pixels")
        rows = load_export(written, fmt, "qwen2.5-vl-pixels", _setting(fmt, True), args.work / "hf")
        result = score(rows, build, by_id, False, masks)
        print(
            f"  {fmt:13s} boxes under 0.9: {result['wrong']} of {result['boxes']} (min IoU {result['min_iou']:.3f})"
        )
        if fmt == "llamafactory":
            snippet = written.parent / f"{written.stem}.llamafactory.yaml"
            capped = args.work / "capped.yaml"
            text = re.sub(r"image_max_pixels: \d+", f"image_max_pixels: {CAP}", snippet.read_text())
            capped.write_text(text)
            print("  --check-config:", check_config(capped)[1][0])
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
