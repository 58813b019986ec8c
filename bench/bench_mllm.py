"""Benchmark the model layer on CPU.

1. Training throughput of ``--base tiny`` (samples/s, tokens/s) and the process's peak memory.
2. Inference latency per question (p50/p95) of a model (default: the shipped bird-nano).

    python bench/bench_mllm.py --data runs/medseg [--steps 60] [--questions 40] [--threads 1]

Without ``--data`` it builds a small synthetic set (bright boxes on dark 256 x 192 images).
Prints one JSON object; numbers depend on the machine and its load, so record both with them.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def synthetic(root: Path, n: int = 16) -> Path:
    """``n`` data-engine records with one REC and one ROC turn each (qwen-vl dialect)."""
    from medground.grounding import get_dialect
    from medground.types import Box

    tag, rng = get_dialect("qwen-vl-grid"), np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "records").mkdir()
    rows = []
    for i in range(n):
        pixels = rng.integers(0, 40, (192, 256), dtype=np.uint8)
        x0, y0 = int(rng.integers(0, 150)), int(rng.integers(0, 100))
        box = Box(x0, y0, x0 + 60, y0 + 50)
        pixels[box.y0 : box.y1, box.x0 : box.x1] = 200
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
        rows.append(
            {
                "id": f"s/{i}#0",
                "image": f"images/{i}.png",
                "width": 256,
                "height": 192,
                "split": "train",
                "dialect": "qwen-vl-grid",
                "modality": "ct",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhere is the liver?"},
                    {"from": "gpt", "value": f"The {tag.ground('liver', [box], 256, 192)} is here."},
                    {"from": "human", "value": f"What is at {tag.box(box, 256, 192)}?"},
                    {"from": "gpt", "value": "It is the liver."},
                ],
                "turns": [
                    {"task": "rec", "structure": "liver", "regions": [0], "negative": False},
                    {"task": "roc", "structure": "liver", "regions": [0], "negative": False},
                ],
                "regions": [{"name": "liver", "box": box.as_list()}],
            }
        )
    (root / "records" / "shard-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def bench_training(data: Path, out: Path, steps: int, batch: int, max_pixels: int) -> dict:
    from medground.mllm.data import read_records
    from medground.mllm.train import RecordDataset, TrainConfig, train

    cfg = TrainConfig(
        data=str(data),
        base="tiny",
        out=str(out),
        max_steps=steps,
        batch_size=batch,
        lr=1e-3,
        logging_steps=max(1, steps // 5),
        save_steps=10**9,
        max_pixels=max_pixels,
    )
    start = time.perf_counter()
    result = train(cfg)
    seconds = time.perf_counter() - start
    records = read_records(data, "train")
    from medground.mllm.grounder import Grounder

    grounder = Grounder.from_pretrained(result.out)
    dataset = RecordDataset(records, grounder.processor, grounder.family, str(data), cfg)
    mean_tokens = statistics.mean(len(dataset[i]["input_ids"]) for i in range(len(dataset)))
    samples = steps * batch
    return {
        "steps": steps,
        "batch_size": batch,
        "max_pixels": max_pixels,
        "seconds_incl_setup": round(seconds, 2),
        "samples_per_s": round(samples / seconds, 2),
        "tokens_per_s": round(samples * mean_tokens / seconds, 1),
        "mean_tokens_per_sample": round(mean_tokens, 1),
        "first_loss": result.losses[0][1],
        "last_loss": result.losses[-1][1],
    }


def bench_inference(model: str | None, data: Path, questions: int) -> dict:
    from medground.mllm.data import read_records, record_turns
    from medground.mllm.grounder import Grounder

    grounder = Grounder.from_pretrained(model)
    items = [
        (data / r["image"], t.question) for r in read_records(data) for t in record_turns(r, grounder.dialect)
    ]
    items = (items * (questions // max(1, len(items)) + 1))[:questions]
    grounder.ask(*items[0])  # warm-up
    times = []
    for image, question in items:
        grounder._image_key = None  # time the image loading too
        start = time.perf_counter()
        grounder.ask(image, question)
        times.append(time.perf_counter() - start)
    q = statistics.quantiles(times, n=20)
    return {
        "model": str(model or "bird-nano"),
        "questions": len(times),
        "p50_ms": round(1000 * statistics.median(times), 1),
        "p95_ms": round(1000 * q[18], 1),
        "mean_ms": round(1000 * statistics.mean(times), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="data-engine output (default: a synthetic set)")
    parser.add_argument("--model", help="model folder for the latency run (default: bird-nano)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-pixels", type=int, default=224 * 224)
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or synthetic(Path(tmp) / "data")
        result = {
            "machine": {
                "python": sys.version.split()[0],
                "torch": torch.__version__,
                "cpu": platform.processor() or platform.machine(),
                "threads": args.threads,
            },
            "train_tiny": bench_training(data, Path(tmp) / "model", args.steps, args.batch, args.max_pixels),
        }
        result["peak_rss_mb_after_training"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        )
        result["inference"] = bench_inference(args.model, data, args.questions)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
