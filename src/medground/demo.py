"""The main job on the bundled sample data: build records, report, and show the shipped models at work.

``run_demo(out)`` builds refer-and-ground records from ``medground/sample/medseg`` into ``out/data``
(with its report), asks the shipped grounding model (bird-nano) where the lungs are on a bundled chest
X-ray that was held out of its training, and segments each bundled fetal-head ultrasound image from the other five with the shipped in-context
segmenter (fetal ultrasound was held out of its training). Each model step runs only when its weights are installed, and says so otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medground.data.api import build_dataset
from medground.data.records import RecordConfig
from medground.io import read_image, read_mask, write_png
from medground.types import Box
from medground.viz import draw_boxes, fill_masks

__all__ = ["SAMPLE_ROOT", "run_demo"]

SAMPLE_ROOT = Path(__file__).resolve().parent / "sample" / "medseg"
# a chest X-ray of the held-out test split of bird-nano's training data (its patient never seen in training;
# tests/mllm/test_shipped_split.py checks the split)
ASK_SAMPLE = "shenzhen_cxr_lung_xray/CHNCXR_0008_0"
ASK_IMAGE = SAMPLE_ROOT / "shenzhen_cxr_lung_xray" / "images" / "CHNCXR_0008_0.png"
ASK_QUESTION = "Where are both lungs?"
HC18 = SAMPLE_ROOT / "hc18_fetal_ultrasound"
HC18_PAIRS = [
    (HC18 / "images" / f"{i}_HC.png", HC18 / "masks" / f"{i}_HC_mask.png")
    for i in ("000", "003", "006", "009", "012", "015")
]

Say = Callable[[str], None]


def _truth_boxes(data: Path, sample_id: str) -> list[Box]:
    """Ground-truth region boxes of one image, from the records the demo just built."""
    for shard in sorted((data / "records").glob("*.jsonl")):
        for line in shard.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record["id"].startswith(sample_id + "#"):
                return [Box.from_list(r["box"]) for r in record["regions"]]
    return []


def _ask(out: Path, say: Say) -> None:
    try:
        from medground.mllm.grounder import Grounder
    except ImportError as error:
        say(f"grounding model skipped: {error} (install the model extras: pip install -e '.[model]')")
        return
    try:
        grounder = Grounder.from_pretrained()
    except (FileNotFoundError, ValueError) as error:
        say(f"grounding model skipped: {error}")
        return
    answer = grounder.ask(ASK_IMAGE, ASK_QUESTION)
    truth = _truth_boxes(out / "data", ASK_SAMPLE)
    boxes = [g.box for g in answer.boxes]
    labels = ["truth"] * len(truth) + [g.label or "answer" for g in answer.boxes]
    colors = [(60, 180, 75)] * len(truth) + [(230, 25, 75)] * len(boxes)
    write_png(out / "ask.png", draw_boxes(read_image(ASK_IMAGE), [*truth, *boxes], labels, colors=colors))
    best = [max((b.iou(t) for t in truth), default=0.0) for b in boxes]
    say(f'bird-nano, {ASK_IMAGE.name} (held out of its training): "{ASK_QUESTION}" -> "{answer.text}"')
    say(
        f"  boxes {[b.as_list() for b in boxes]}, IoU with the nearest true box {[round(v, 2) for v in best]}; "
        f"drawn with the truth in {out / 'ask.png'}"
    )


def _segment(out: Path, say: Say) -> None:
    try:
        from medground.icl.segmenter import InContextSegmenter
    except ImportError as error:
        say(f"in-context segmentation skipped: {error} (install the model extras: pip install -e '.[model]')")
        return
    try:
        segmenter = InContextSegmenter.from_pretrained()
    except (FileNotFoundError, ValueError) as error:
        say(f"in-context segmentation skipped: {error}")
        return
    dices = []
    for query, truth_path in HC18_PAIRS:  # each image from the other five, as a user with 5 examples would
        support = [pair for pair in HC18_PAIRS if pair[0] != query]
        predicted = segmenter.segment(query, support=support, text="fetal head") > 0.5
        truth = read_mask(truth_path) > 0
        dices.append(2 * np.logical_and(predicted, truth).sum() / max(1, predicted.sum() + truth.sum()))
        overlay = fill_masks(read_image(query), [truth, predicted], colors=[(60, 180, 75), (230, 25, 75)])
        write_png(out / "segment" / f"{query.stem}_overlay.png", overlay)
    say(
        f"in-context segmentation of {len(HC18_PAIRS)} fetal-head ultrasound images, each from the other 5 + 'fetal head' "
        f"(a dataset held out of the weights' training): Dice {', '.join(f'{d:.2f}' for d in dices)}, mean {np.mean(dices):.2f}; "
        f"overlays (green truth, red prediction) in {out / 'segment'}"
    )


def run_demo(out: Path, say: Say = print, progress: bool = True) -> dict:
    """Run the main job into ``out``; returns the data manifest."""
    sources = sorted(p for p in SAMPLE_ROOT.iterdir() if p.is_dir())
    manifest = build_dataset(sources, out / "data", RecordConfig(seed=0), overwrite=True, progress=progress)
    counts = manifest["counts"]
    say(
        f"built {counts['records']} conversations ({counts['turns']} turns, {counts['regions']} regions) from "
        f"{len(sources)} bundled datasets into {out / 'data'}; report: {out / 'data' / 'report' / 'report.html'}"
    )
    _ask(out, say)
    _segment(out, say)
    return manifest
