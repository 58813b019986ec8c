"""What a wrong box-edge convention costs: boxes written in one 1000-step convention, read in the other.

Qwen2-VL/Qwen3-VL's own data code writes box edges on [0, 1000] (``qwen2-vl-norm1000``); medground wrote
last-pixel bins on [0, 1000) until 2026-12 (``qwen2-vl-grid``). For random boxes (sides from 8 px to half
the image) in random images of 256-1024 px a side, this prints the IoU between each box and the box read
back through the other convention, both ways, and the same for small boxes (8-16 px). Pure Python, seconds.

    python bench/bench_dialect_conventions.py [--boxes 20000] [--seed 0]
"""

from __future__ import annotations

import argparse
import random

import numpy as np

from medground.grounding import DIALECTS, Dialect
from medground.types import Box


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two canonical boxes (x1/y1 exclusive)."""
    ix = max(0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    return inter / ((a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter)


def misread(write: Dialect, read: Dialect, n: int, small: bool, rng: random.Random) -> np.ndarray:
    """IoU of n random boxes with themselves written by ``write`` and parsed by ``read``."""
    out = np.empty(n)
    for i in range(n):
        w, h = rng.randint(256, 1024), rng.randint(256, 1024)
        bw, bh = (
            (rng.randint(8, 16), rng.randint(8, 16))
            if small
            else (rng.randint(8, w // 2), rng.randint(8, h // 2))
        )
        x0, y0 = rng.randrange(w - bw), rng.randrange(h - bh)
        box = Box(x0, y0, x0 + bw, y0 + bh)
        out[i] = iou(box, read.parse(write.box(box, w, h), w, h)[0].box)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    edges, bins = DIALECTS["qwen2-vl-norm1000"], DIALECTS["qwen2-vl-grid"]
    pairs = [
        ("edges read as edges", edges, edges),
        ("edges read as bins", edges, bins),
        ("bins read as edges", bins, edges),
    ]
    for label, write, read in pairs:
        for small in (False, True):
            ious = misread(write, read, args.boxes, small, random.Random(args.seed))
            size = "8-16 px" if small else "8 px-half side"
            print(
                f"{label}, boxes {size}: mean IoU {ious.mean():.3f}, min {ious.min():.3f}, "
                f"IoU < 0.5: {(ious < 0.5).mean():.1%}"
            )


if __name__ == "__main__":
    main()
