"""Benchmark: the near-duplicate check of `medground check-splits` on the shared collection, and its
candidate search at scale.

Everything goes through what check-splits runs: each image's stored hashes
(:func:`medground.io.phash.stored_hashes`, what the build writes into records), the multi-index search
(:func:`medground.io.phash.near_pairs`) and the pixel check (:func:`medground.io.phash.compare` in the
orientation the search found).

False pairs: every pair of images from two different datasets of the shared collection, and every pair
of one dataset whose two patients are known to differ (meta.json ``"cases": "image"`` or distinct ``case``
values in pairs.csv), distinct pictures by construction; a pair the search and the check call "same
picture" is a false pair. Detection: from every ``--stride``-th image we make copies the way a leak
happens (byte copy, JPEG re-encodes, resizes, crops of up to 10% per side, mirrored, turned by 90/180/270
degrees, flipped upside down, and mixes) and count how many the search + check find among the whole
collection. Scale (``--scale N``): N stored-hash rows drawn from the real images' hashes (each a real
image's 89 hashes with the same random bits flipped, as many as that image's distance to its nearest
other real image), searched in a fresh process: wall time and peak RSS; the hashing cost per image is
reported apart.

    python bench/bench_check_splits.py [--shared ../shared/data/medseg] [--stride 1] [--seed 0] [--scale 100000]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from medground.io import IMAGE_SUFFIXES, read_image
from medground.io.phash import (
    CANDIDATE_BITS,
    MATCH_SCORE,
    ORIENTATIONS,
    compare,
    hamming,
    near_pairs,
    orient,
    stored_hashes,
    window_hashes,
)

HERE = Path(__file__).resolve().parent


def jpeg(array: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())))


def resize(array: np.ndarray, factor: float) -> np.ndarray:
    height, width = array.shape[:2]
    size = (max(8, round(width * factor)), max(8, round(height * factor)))
    return np.asarray(Image.fromarray(array).resize(size, Image.Resampling.LANCZOS))


def crop(array: np.ndarray, left: float, top: float, right: float, bottom: float) -> np.ndarray:
    height, width = array.shape[:2]
    return array[
        round(top * height) : height - round(bottom * height),
        round(left * width) : width - round(right * width),
    ]


def variants(array: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The copies a leak makes of one picture, by name."""
    return {
        "byte copy": array,
        "JPEG q75": jpeg(array, 75),
        "JPEG q50": jpeg(array, 50),
        "resize x0.5": resize(array, 0.5),
        "resize x1.5": resize(array, 1.5),
        "crop 10% left": crop(array, 0.10, 0, 0, 0),
        "crop 10% all sides": crop(array, 0.10, 0.10, 0.10, 0.10),
        "crop 0-10% per side (random)": crop(array, *rng.uniform(0, 0.10, 4)),
        "crop 0-10% + resize x0.6 + JPEG q80": jpeg(resize(crop(array, *rng.uniform(0, 0.10, 4)), 0.6), 80),
        "mirrored + JPEG q75": jpeg(np.ascontiguousarray(orient(array, 4)), 75),
        "turned 90 + JPEG q75": jpeg(np.ascontiguousarray(orient(array, 1)), 75),
        "turned 180": np.ascontiguousarray(orient(array, 2)),
        "turned 270 + resize x0.7": resize(np.ascontiguousarray(orient(array, 3)), 0.7),
        "upside down (mirror 180)": np.ascontiguousarray(orient(array, 6)),
        "crop 0-10% + mirrored + JPEG q80": jpeg(
            np.ascontiguousarray(orient(crop(array, *rng.uniform(0, 0.10, 4)), 4)), 80
        ),
    }


def patient_keys(files: list[Path]) -> list[str | None]:
    """Each image's patient where its dataset says (``cases: image``, or a ``case`` column), else None."""
    keys: list[str | None] = []
    for path in files:
        root = path.parents[1]
        meta = json.loads((root / "meta.json").read_text()) if (root / "meta.json").exists() else {}
        with open(root / "pairs.csv", newline="") as handle:
            cases = {Path(r["image"]).name: (r.get("case") or "").strip() for r in csv.DictReader(handle)}
        if cases.get(path.name):
            keys.append(f"{root.name}/{cases[path.name]}")
        elif meta.get("cases") == "image":
            keys.append(f"{root.name}/{path.stem}")
        else:
            keys.append(None)
    return keys


def verified(first: np.ndarray, second: np.ndarray, k: int) -> tuple[bool, int, float]:
    """The pixel check of check-splits on a candidate: ``second`` turned by orientation k is a view of ``first``."""
    turned = np.ascontiguousarray(orient(second, k))
    return compare(first, window_hashes(first), turned, window_hashes(turned), candidate=True)


_SEARCH = """
import resource, sys, time
import numpy as np
from medground.io.phash import near_pairs
stored = np.load(sys.argv[1])
started = time.perf_counter()
pairs = near_pairs(stored)
elapsed = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
print(f"{elapsed:.1f} {peak:.0f} {len(pairs)} {cpu:.1f}")
"""


def scale(stored: np.ndarray, count: int, seed: int, workdir: Path) -> None:
    """Search ``count`` hash rows drawn from the real ``stored`` rows in a fresh process; print time, RSS."""
    rng = np.random.default_rng(seed)
    full = stored[:, 0]
    nearest = hamming(full[:, None, None], stored[None, :, :8]).min(axis=2)
    np.fill_diagonal(nearest, 64)
    distances = nearest.min(axis=1)
    origin = rng.integers(0, len(stored), count)
    drawn = stored[origin].copy()
    for row, weight in enumerate(distances[origin]):
        bits = rng.choice(64, size=int(weight), replace=False)
        drawn[row] ^= np.uint64(sum(1 << int(b) for b in bits))
    path = workdir / f"stored_{count}.npy"
    np.save(path, drawn)
    done = subprocess.run(
        [sys.executable, "-c", _SEARCH, str(path)], capture_output=True, text=True, check=True
    )
    elapsed, peak, pairs, cpu = done.stdout.split()
    print(
        f"scale: {count} stored-hash rows ({drawn.nbytes / 2**20:.0f} MiB; drawn from {len(stored)} real images, "
        f"each moved by its nearest real neighbour's distance, median {int(np.median(distances))} bits): "
        f"search {elapsed} s wall ({cpu} s CPU of the process, import and load included), peak RSS {peak} MiB, "
        f"{pairs} candidate (i, j, orientation) rows"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared" / "data" / "medseg")
    parser.add_argument("--stride", type=int, default=1, help="make copies of every n-th image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=0, help="also search this many drawn hash rows")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp"))
    args = parser.parse_args()

    files = sorted(p for p in args.shared.glob("*/images/*") if p.suffix.lower() in IMAGE_SUFFIXES)
    datasets = np.array([p.parts[-3] for p in files])
    started = time.perf_counter()
    arrays = [read_image(p) for p in files]
    read = time.perf_counter() - started
    started = time.perf_counter()
    stored = np.stack([stored_hashes(a) for a in arrays])
    hashing = (time.perf_counter() - started) / len(files)
    print(
        f"{len(files)} images from {len(set(datasets))} datasets; read in {1000 * read / len(files):.0f} ms/image, "
        f"stored hashes (8 orientations + 81 windows) in {hashing * 1000:.1f} ms/image"
    )

    # False pairs: the search over the whole collection, then the pixel check on every candidate.
    started = time.perf_counter()
    candidates = near_pairs(stored)
    search = time.perf_counter() - started
    keys = np.array(patient_keys(files), dtype=object)
    pairs: dict[tuple[int, int], tuple[int, int, int]] = {}
    for i, j, k in candidates.tolist():
        pairs.setdefault((min(i, j), max(i, j)), (i, j, k))
    n = len(files)
    cross_total = int(sum(np.sum(datasets[a] != datasets[a + 1 :]) for a in range(n)))
    print(
        f"search: {len(pairs)} candidate pairs of {n * (n - 1) // 2} in {search:.2f} s ({CANDIDATE_BITS} bits)"
    )
    for label, wanted in (
        ("cross-dataset", lambda a, b: datasets[a] != datasets[b]),
        (
            "within-dataset, two known patients",
            lambda a, b: datasets[a] == datasets[b] and None not in (keys[a], keys[b]) and keys[a] != keys[b],
        ),
    ):
        chosen = [pair for key, pair in pairs.items() if wanted(*key)]
        scores, false_pairs = [], []
        for i, j, k in chosen:
            same, _, score = verified(arrays[i], arrays[j], k)
            scores.append(score)
            if same:
                false_pairs.append((files[i], files[j], ORIENTATIONS[k], score))
        print(
            f"false pairs: {len(false_pairs)} among {len(chosen)} {label} candidates "
            f"(highest verified score {max(scores, default=float('nan')):.3f}, threshold {MATCH_SCORE})"
            + (f"; {cross_total} cross-dataset pairs in all" if label == "cross-dataset" else "")
        )
        for a, b, turn, score in false_pairs:
            print(f"  FALSE PAIR {a} ~ {b} ({turn}, score {score:.3f})")

    # Detection of made copies: each copy searched among the whole collection, then checked.
    rng = np.random.default_rng(args.seed)
    found: dict[str, list[bool]] = defaultdict(list)
    for index in range(0, n, args.stride):
        made = variants(arrays[index], rng)
        rows = np.concatenate([stored, np.stack([stored_hashes(c) for c in made.values()])])
        hits = near_pairs(rows)
        for offset, (name, copy) in enumerate(made.items()):
            pictures = {index: arrays[index], n + offset: copy}
            mine = hits[np.isin(hits[:, 0], list(pictures)) & np.isin(hits[:, 1], list(pictures))]
            ok = any(verified(pictures[i], pictures[j], k)[0] for i, j, k in mine.tolist())
            found[name].append(ok)
            if not ok:
                print(f"    missed {name}: {files[index]} ({len(mine)} candidate rows)")
    total = sum(len(v) for v in found.values())
    hits_total = sum(sum(v) for v in found.values())
    print(f"detection: {hits_total} of {total} copies ({100 * hits_total / total:.1f}%)")
    for name, results in found.items():
        print(f"  {name:38s} {sum(results):4d}/{len(results)}")

    if args.scale:
        scale(stored, args.scale, args.seed, args.workdir)


if __name__ == "__main__":
    main()
