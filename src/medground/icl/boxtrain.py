"""Training data and training loop of the box-prompt model (:mod:`medground.icl.boxprompt`).

Examples are the data engine's regions: each region of a record (one instance of one structure, its
``box`` x1/y1 exclusive and its ``mask``) is one (image, box) -> mask example. A training sample
jitters the box (each side moves by up to ``jitter`` of the box's width/height, as MedSAM's box
perturbation), flips the window and changes its gamma. Half the samples also get a prior channel that
imitates the in-context segmenter's map: the union of all instances of the same structure in that
image (what an in-context model segments: the class, not the instance), brought to the in-context
working resolution (64 x 64 of the whole image), shifted, blurred, scaled and noised.

Run: ``python -m medground.icl.boxtrain DATA --out FOLDER [--held-out SOURCE ...] --steps N --seed S``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from medground.icl.boxprompt import PRIOR, PRIOR_GIVEN, BoxSeg, BoxSegConfig, box_inputs, save_boxseg
from medground.icl.preprocess import to_rgb_float
from medground.icl.protocol import expand_held_out
from medground.io import read_image, region_mask

__all__ = ["BoxExample", "BoxData", "load_box_data", "train_boxseg"]

PRIOR_SIZE = 64
"""Resolution of the whole-image prior map (the in-context segmenter's working size)."""
MIN_FILL = 0.25
"""Regions covering less of their box than this (vessel trees spanning a whole fundus: ~0.1) are not
objects a box can prompt; trained on, they taught the model to hollow out compact structures of the same
look (IDRiD's optic disc next to DRIVE's vessels). Compact objects fill 0.5-0.8 (an ellipse: 0.785)."""


@dataclass
class BoxExample:
    """One region: image index into :attr:`BoxData.images`, its tight box and the mask inside the box."""

    image: int
    source: str
    key: str
    box: tuple[int, int, int, int]
    mask: np.ndarray
    """(y1 - y0, x1 - x0) bool: the instance's mask cropped to its box."""
    case: str | None
    region: str
    """The region's mask file, relative to the data folder (an id for reports)."""


@dataclass
class BoxData:
    """All regions of a data-engine folder; images as (H, W, 3) uint8 (min-max scaled per image)."""

    images: list[np.ndarray] = field(default_factory=list)
    image_files: list[str] = field(default_factory=list)
    examples: list[BoxExample] = field(default_factory=list)
    priors: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)
    """(image index, structure key) -> (64, 64) float32: union of that structure's instances, area-resized."""
    splits: list[str] | None = None
    """The record splits loaded (None: all), recorded with the weights trained on them."""

    @property
    def sources(self) -> list[str]:
        return sorted({e.source for e in self.examples})

    def full_mask(self, example: BoxExample) -> np.ndarray:
        """The example's (H, W) bool mask at its image's size."""
        h, w = self.images[example.image].shape[:2]
        out = np.zeros((h, w), dtype=bool)
        x0, y0, x1, y1 = example.box
        out[y0:y1, x0:x1] = example.mask
        return out


def load_box_data(folder: Path, splits: Iterable[str] | None = None) -> BoxData:
    """Read every region of a ``medground build`` output folder (records/*.jsonl, images/, PNG or RLE masks).

    ``splits``: keep only records of these splits (e.g. train and val, so that the test patients of the
    build stay unseen by the shipped weights); None keeps all.
    """
    wanted = set(splits) if splits is not None else None
    folder = Path(folder)
    shards = sorted((folder / "records").glob("*.jsonl"))
    if not shards:
        raise FileNotFoundError(
            f"{folder}/records/*.jsonl not found; expected the output of `medground build`"
        )
    data = BoxData(splits=sorted(wanted) if wanted is not None else None)
    seen: dict[str, int] = {}
    unions: dict[tuple[int, str], np.ndarray] = {}
    for shard in shards:
        for line in shard.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec["image"] in seen or (wanted is not None and rec.get("split") not in wanted):
                continue
            index = seen[rec["image"]] = len(data.images)
            rgb = to_rgb_float(read_image(folder / rec["image"]), rec["image"])
            data.images.append((rgb * 255).round().astype(np.uint8))
            data.image_files.append(rec["image"])
            h, w = rgb.shape[:2]
            for region in rec.get("regions", []):
                mask = region_mask(folder, region)
                name = region.get("mask") or f"{rec['id']}/{region['key']}_{region['instance']:03d}"
                if mask.shape != (h, w):
                    raise ValueError(f"{folder / name}: mask {mask.shape} does not match image {(h, w)}")
                rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
                if rows.size == 0:
                    continue
                box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
                key = region["key"]
                data.examples.append(
                    BoxExample(
                        index,
                        rec["source"],
                        key,
                        box,
                        mask[box[1] : box[3], box[0] : box[2]].copy(),
                        rec.get("case") or None,
                        name,
                    )
                )
                u = unions.setdefault((index, key), np.zeros((h, w), dtype=bool))
                u |= mask
    for k, u in unions.items():
        t = torch.from_numpy(u.astype(np.float32))[None, None]
        data.priors[k] = F.interpolate(t, size=(PRIOR_SIZE, PRIOR_SIZE), mode="area")[0, 0].numpy()
    return data


def jitter_box(
    box: tuple[int, int, int, int], height: int, width: int, amount: float, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """Move each side by uniform(-amount, amount) of the box's width (x) / height (y); clipped, non-empty."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    d = rng.uniform(-amount, amount, 4) * np.array([bw, bh, bw, bh])
    nx0 = int(np.clip(round(x0 + d[0]), 0, width - 1))
    ny0 = int(np.clip(round(y0 + d[1]), 0, height - 1))
    nx1 = int(np.clip(round(x1 + d[2]), nx0 + 1, width))
    ny1 = int(np.clip(round(y1 + d[3]), ny0 + 1, height))
    return nx0, ny0, nx1, ny1


def _window_of_map(
    map64: np.ndarray, window: tuple[int, int, int, int], height: int, width: int, size: int
) -> np.ndarray:
    """Sample a whole-image (64, 64) map over a crop window at (size, size) (zero past the border)."""
    wx0, wy0, wx1, wy1 = window
    xs = wx0 + (np.arange(size) + 0.5) * (wx1 - wx0) / size
    ys = wy0 + (np.arange(size) + 0.5) * (wy1 - wy0) / size
    gx, gy = 2 * xs / width - 1, 2 * ys / height - 1
    grid = torch.from_numpy(np.stack(np.meshgrid(gx, gy), -1).astype(np.float32))[None]
    t = torch.from_numpy(map64.astype(np.float32))[None, None]
    return F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0].numpy()


def degrade_prior(map64: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Imitate an in-context probability map from the true (64, 64) class union: shift, blur, scale, noise."""
    p = np.roll(map64, tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
    t = torch.from_numpy(p.astype(np.float32))[None, None]
    if rng.random() < 0.6:
        t = F.avg_pool2d(t, 3, 1, 1)
    if rng.random() < 0.3:  # missed parts / false positives as coarse blobs
        blobs = F.interpolate(
            torch.from_numpy(rng.random((1, 1, 8, 8)).astype(np.float32)), size=PRIOR_SIZE, mode="bilinear"
        )
        t = t * (blobs > 0.25) + (blobs > 0.85) * 0.7
    p = t[0, 0].numpy() * rng.uniform(0.5, 1.0) + rng.uniform(0, 0.2) * rng.random((PRIOR_SIZE, PRIOR_SIZE))
    return np.clip(p, 0, 1).astype(np.float32)


def make_sample(
    data: BoxData,
    example: BoxExample,
    config: BoxSegConfig,
    rng: np.random.Generator,
    jitter: float,
    prior_rate: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented (7, S, S) input and its (1, S, S) target (area fractions of the instance)."""
    image = data.images[example.image]
    h, w = image.shape[:2]
    box = jitter_box(example.box, h, w, jitter, rng) if rng.random() < 0.8 else example.box
    x, window = box_inputs(image, box, config)
    s = config.size
    if rng.random() < prior_rate:
        prior = degrade_prior(data.priors[(example.image, example.key)], rng)
        x[PRIOR] = torch.from_numpy(_window_of_map(prior, window, h, w, s))
        x[PRIOR_GIVEN] = 1.0
    wx0, wy0, wx1, wy1 = window
    target = np.zeros((wy1 - wy0, wx1 - wx0), dtype=np.float32)
    x0, y0, x1, y1 = example.box
    ox0, oy0 = x0 - wx0, y0 - wy0
    # the instance may stick out of a jittered (smaller) window: paste only the overlap
    tx0, ty0 = max(ox0, 0), max(oy0, 0)
    tx1, ty1 = min(ox0 + (x1 - x0), wx1 - wx0), min(oy0 + (y1 - y0), wy1 - wy0)
    if tx1 > tx0 and ty1 > ty0:
        target[ty0:ty1, tx0:tx1] = example.mask[ty0 - oy0 : ty1 - oy0, tx0 - ox0 : tx1 - ox0]
    y = F.interpolate(torch.from_numpy(target)[None, None], size=(s, s), mode="area")[0]
    x[:3] = x[:3] ** float(np.exp(rng.uniform(-0.35, 0.35)))
    if rng.random() < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    if rng.random() < 0.5:
        x, y = x.flip(-2), y.flip(-2)
    return x, y


def train_boxseg(
    data: BoxData,
    out: Path,
    held_out: list[str] | None = None,
    steps: int = 2000,
    batch: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    jitter: float = 0.1,
    prior_rate: float = 0.5,
    config: BoxSegConfig | None = None,
    min_fill: float = MIN_FILL,
) -> dict:
    """Train on every source except ``held_out`` (with their domain groups); sources are drawn uniformly,
    then a region of the source. Regions whose mask covers less than ``min_fill`` of their box are left
    out (see :data:`MIN_FILL`). Saves the model in ``out`` and returns a summary (also ``out/train.json``)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    held = expand_held_out(held_out or [], data.sources)
    by_source: dict[str, list[BoxExample]] = defaultdict(list)
    sparse = 0
    for e in data.examples:
        if e.source in held:
            continue
        if e.mask.mean() < min_fill:
            sparse += 1
            continue
        by_source[e.source].append(e)
    sources = sorted(by_source)
    config = config or BoxSegConfig()
    model = BoxSeg(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    start, losses = time.process_time(), []
    model.train()
    for _ in range(steps):
        picks = [by_source[sources[i]] for i in rng.integers(0, len(sources), batch)]
        pairs = [make_sample(data, p[rng.integers(len(p))], config, rng, jitter, prior_rate) for p in picks]
        x, y = torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])
        logits = model(x)
        prob = torch.sigmoid(logits)
        dice = 1 - (2 * (prob * y).sum((1, 2, 3)) + 1) / (prob.sum((1, 2, 3)) + y.sum((1, 2, 3)) + 1)
        loss = F.binary_cross_entropy_with_logits(logits, y) + dice.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    summary = {
        "trained_sources": sources,
        "held_out": sorted(held),
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "seed": seed,
        "jitter": jitter,
        "prior_rate": prior_rate,
        "min_fill": min_fill,
        "regions_left_out_as_sparse": sparse,
        "cpu_seconds": round(time.process_time() - start, 1),
        "final_loss": float(np.mean(losses[-50:])),
        "splits": data.splits or "all",
    }
    save_boxseg(model.eval(), out)
    (Path(out) / "train.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the box-prompt model on data-engine regions.")
    parser.add_argument("data", type=Path, help="medground build output folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--held-out", action="append", default=[], help="source to exclude (with its domain group)"
    )
    parser.add_argument(
        "--split",
        action="append",
        default=None,
        help="train only on records of this split (repeat: --split train --split val); default all",
    )
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    summary = train_boxseg(
        load_box_data(args.data, args.split), args.out, args.held_out, args.steps, args.batch, seed=args.seed
    )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
