"""Refer -> ground -> segment, end to end on held-out images (issue 10, deliverable 3).

For every positive REC turn ("Find the left lung") of a build's held-out split, the grounding model
answers with boxes and each box gets its mask from the box-prompted segmenter (what
``Grounder.ask(..., segment=True)`` does). Scored against the truth mask of the asked structure (the
union of its instances in the record), per turn:

- ``dice_mask``: Dice of the union of the answer's masks (0 when the answer has no box);
- ``dice_box``: Dice of the answer's boxes filled (the box-only answer as a mask);
- ``acc50``: REC Acc@0.5, the first box has IoU >= 0.5 with a truth box (as ``medground.mllm.heldout``);
- ``dice_oracle``: the truth boxes -> masks, union (segmentation errors alone, grounding perfect);
- ``dice_oracle_box``: the truth boxes filled (what a perfect box alone gives).

Means per modality and overall, 95% intervals from a bootstrap over patients (the record's ``case``;
``medground.eval.stats``). Timing: the grounding call and the segmentation of its boxes are timed
apart, and the ratio (ask + segment) / ask is printed (same run, same machine).

    python bench/bench_ask_segment.py --data /work/runs/asks/data [--split test] [--out result.json]

The split must be held out of both models' training (check the builds; see bench/RESULTS.md). Turns
whose structure is absent (negatives) have no truth mask and are skipped.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from medground.eval.seg_metrics import dice
from medground.eval.stats import BootstrapConfig, Units, aggregate, bootstrap_ci, safe_div
from medground.grounding import Grounded
from medground.icl.segmenter import InContextSegmenter
from medground.io import region_mask
from medground.mllm.data import load_image, read_records, record_turns
from medground.mllm.grounder import Grounder, mask_boxes
from medground.types import Box

COLUMNS = ("dice_mask", "dice_box", "acc50", "dice_oracle", "dice_oracle_box")


def filled(boxes: list[Box], height: int, width: int) -> np.ndarray:
    """(H, W) bool: the union of ``boxes`` filled."""
    out = np.zeros((height, width), bool)
    for b in boxes:
        out[b.y0 : b.y1, b.x0 : b.x1] = True
    return out


def union(masks: list[np.ndarray], height: int, width: int) -> np.ndarray:
    out = np.zeros((height, width), bool)
    for m in masks:
        out |= m
    return out


def check_patients(records: list[dict[str, Any]], split: str) -> dict[str, Any]:
    """The held-out split's patients never appear in train or val of the same build."""
    held = {r["case"] for r in records if r["split"] == split}
    seen = {r["case"] for r in records if r["split"] != split}
    if held & seen:
        raise SystemExit(f"patients in both {split} and the other splits: {sorted(held & seen)[:5]}")
    sources = sorted({r["source"] for r in records if r["split"] == split})
    return {"patients": len(held), "sources": sources}


def evaluate(grounder: Grounder, data: Path, split: str, limit: int | None) -> tuple[list[dict], dict]:
    """One row per positive REC turn of ``split``; timings of grounding and segmentation."""
    segmenter = grounder.box_segmenter()
    rows, oracle, times = [], {}, {"ask": [], "segment": []}
    records = read_records(data, split)[:limit]
    for n, record in enumerate(records, 1):
        picture = load_image(data / record["image"])
        width, height = picture.size
        for i, turn in enumerate(record_turns(record, grounder.dialect)):
            meta = record["turns"][i]
            if turn.task != "rec" or meta.get("negative"):
                continue
            regions = [record["regions"][j] for j in meta["regions"]]
            truth = union([region_mask(data, r, record["id"]) for r in regions], height, width)
            truth_boxes = [Box.from_list(r["box"]) for r in regions]
            start = time.perf_counter()
            answer = grounder.ask(picture, turn.question)
            middle = time.perf_counter()
            masked = mask_boxes(segmenter, picture, answer.boxes)
            times["ask"].append(middle - start)
            times["segment"].append(time.perf_counter() - middle)
            key = (record["image"], meta["structure"])
            if key not in oracle:
                oracle_masks = mask_boxes(segmenter, picture, [Grounded(None, b) for b in truth_boxes])
                oracle[key] = (
                    dice(union([g.mask for g in oracle_masks], height, width), truth),
                    dice(filled(truth_boxes, height, width), truth),
                )
            boxes = [g.box for g in answer.boxes]
            rows.append(
                {
                    "record": record["id"],
                    "turn": i,
                    "case": record["case"],
                    "source": record["source"],
                    "modality": record.get("modality") or "unknown",
                    "structure": meta["structure"],
                    "question": turn.question,
                    "answer": answer.text,
                    "boxes": [b.as_list() for b in boxes],
                    "dice_mask": dice(union([g.mask for g in masked], height, width), truth),
                    "dice_box": dice(filled(boxes, height, width), truth),
                    "acc50": float(bool(boxes) and any(boxes[0].iou(t) >= 0.5 for t in truth_boxes)),
                    "dice_oracle": oracle[key][0],
                    "dice_oracle_box": oracle[key][1],
                }
            )
        print(f"  {n}/{len(records)} records, {len(rows)} turns", file=sys.stderr)
    return rows, times


DIFFERENCES = {
    "mask_minus_box": ("dice_mask", "dice_box"),
    "oracle_minus_box": ("dice_oracle", "dice_oracle_box"),
}
"""Paired per-turn differences: what the mask adds to the model's boxes, and to the truth boxes."""
LABELS = {
    "dice_mask": "mask Dice (answer boxes -> masks)",
    "dice_box": "box Dice (answer boxes filled)",
    "mask_minus_box": "mask - box",
    "acc50": "REC Acc@0.5",
    "dice_oracle": "oracle mask Dice (truth boxes -> masks)",
    "dice_oracle_box": "truth boxes filled Dice",
    "oracle_minus_box": "oracle - truth boxes",
}


def summarise(rows: list[dict], boot: int) -> dict[str, Any]:
    """Means per modality (each with its own patient bootstrap), overall (micro over turns, patient
    bootstrap) and macro (mean of modalities); ``patients`` per modality."""
    columns = {c: np.asarray([r[c] for r in rows], float) for c in COLUMNS}
    columns |= {d: columns[a] - columns[b] for d, (a, b) in DIFFERENCES.items()}
    columns["n"] = np.ones(len(rows))
    metrics = {c: (lambda s, c=c: safe_div(s[c], s["n"])) for c in LABELS}
    cases, groups = [r["case"] for r in rows], [r["modality"] for r in rows]
    config = BootstrapConfig(boot)
    summary = aggregate(columns, groups, metrics, config, Units.of(cases, "patient"))
    summary["group_ci"], summary["patients"] = {}, {}
    for g in summary["per_group"]:
        keep = np.asarray([x == g for x in groups])
        subset = {k: v[keep] for k, v in columns.items()}
        units = Units.of([c for c, k in zip(cases, keep, strict=True) if k], "patient")
        summary["patients"][g] = units.count
        summary["group_ci"][g] = {m: bootstrap_ci(subset, fn, config, units) for m, fn in metrics.items()}
    summary["patients"]["all"] = len(set(cases))
    return summary


def _cell(value: float, ci: list[float] | None) -> str:
    return f"{value:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def table(summary: dict[str, Any]) -> str:
    """Markdown: one row per modality, then all turns pooled and the macro mean; 95% patient intervals."""
    lines = [
        "| modality | patients | REC turns | " + " | ".join(LABELS.values()) + " |",
        "|" + "---|" * (3 + len(LABELS)),
    ]
    for g, scores in summary["per_group"].items():
        cells = " | ".join(_cell(scores[c], summary["group_ci"][g][c]) for c in LABELS)
        lines.append(f"| {g} | {summary['patients'][g]} | {summary['n'][g]} | {cells} |")
    micro, ci = summary["micro"], summary["ci"]
    cells = " | ".join(f"**{_cell(micro[c], ci[c])}**" for c in LABELS)
    turns = sum(summary["n"].values())
    lines.append(f"| all (turns pooled) | {summary['patients']['all']} | {turns} | {cells} |")
    macro = " | ".join(f"{summary['macro'][c]:.3f}" for c in LABELS)
    lines.append(f"| mean of modalities | | | {macro} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="data-engine build folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", type=Path, default=None, help="grounding model (default: bird-nano)")
    parser.add_argument(
        "--box-model", type=Path, default=None, help="box-prompt model folder (default: the shipped one)"
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N records")
    parser.add_argument("--boot", type=int, default=2000, help="bootstrap replicates")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write rows and summary as JSON")
    parser.add_argument(
        "--rows", type=Path, default=None, help="summarise the rows of an earlier --out (no models run)"
    )
    args = parser.parse_args()
    if args.rows is not None:
        earlier = json.loads(args.rows.read_text())
        print(table(summarise(earlier["rows"], args.boot)))
        return
    import torch

    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    held_out = check_patients(read_records(args.data), args.split)
    started = time.perf_counter()
    segmenter = InContextSegmenter.from_pretrained(box_path=args.box_model)
    grounder = Grounder.from_pretrained(args.model, segmenter=segmenter)
    rows, times = evaluate(grounder, args.data, args.split, args.limit)
    summary = summarise(rows, args.boot)
    ask, seg = statistics.mean(times["ask"]), statistics.mean(times["segment"])
    micro = summary["micro"]
    result = {
        "data": str(args.data),
        "split": args.split,
        "box_model": str(args.box_model or "shipped"),
        "machine": f"{platform.machine()}, {platform.python_version()}, torch threads {args.threads}",
        "held_out": held_out,
        "turns": len(rows),
        "ratios": {
            "mask_dice_over_box_dice": micro["dice_mask"] / micro["dice_box"],
            "oracle_mask_dice_over_truth_box_dice": micro["dice_oracle"] / micro["dice_oracle_box"],
            "ask_plus_segment_seconds_over_ask": (ask + seg) / ask,
        },
        "seconds": {"ask_mean": ask, "segment_mean": seg, "wall": time.perf_counter() - started},
        "summary": summary,
    }
    print(table(summary))
    print(json.dumps({k: v for k, v in result.items() if k != "summary"}, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**result, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
