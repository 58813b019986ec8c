"""Benchmark: the near-duplicate check of `medground check-splits` on the shared collection.

False pairs: every pair of images from two different datasets of the shared collection, and every pair
of one dataset whose two patients are known to differ (meta.json ``"cases": "image"`` or distinct ``case``
values in pairs.csv: two chest X-rays of two patients look much alike), distinct pictures by
construction, goes through the same test as check-splits (:func:`medground.io.phash.compare`); a pair
called "same picture" is a false pair. Detection: from every ``--stride``-th image we make
copies the way a leak happens (byte copy, JPEG re-encodes, resizes, crops of up to 10% per side, and
all at once) and count how many the same test finds. Prints both with counts, the hash-distance and
score margins, and the time per image.

    python bench/bench_check_splits.py [--shared ../shared/data/medseg] [--stride 1] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from medground.io import IMAGE_SUFFIXES, read_image
from medground.io.phash import CANDIDATE_BITS, MATCH_SCORE, compare, hamming, window_hashes

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared" / "data" / "medseg")
    parser.add_argument("--stride", type=int, default=1, help="make copies of every n-th image")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    files = sorted(p for p in args.shared.glob("*/images/*") if p.suffix.lower() in IMAGE_SUFFIXES)
    datasets = np.array([p.parts[-3] for p in files])
    started = time.perf_counter()
    arrays = [read_image(p) for p in files]
    hashes = np.stack([window_hashes(a) for a in arrays])
    per_image = (time.perf_counter() - started) / len(files)
    print(
        f"{len(files)} images from {len(set(datasets))} datasets; read + hashed in {per_image * 1000:.0f} ms/image"
    )

    # False pairs over all cross-dataset pairs and all within-dataset pairs of two known, different patients.
    full_to_windows = hamming(hashes[:, None, 0:1], hashes[None, :, :]).min(axis=2)
    bits = np.minimum(full_to_windows, full_to_windows.T)
    keys = np.array(patient_keys(files), dtype=object)
    known = np.array([k is not None for k in keys])
    cross = np.triu(datasets[:, None] != datasets[None, :], 1)
    within = np.triu(
        (datasets[:, None] == datasets[None, :])
        & known[:, None]
        & known[None, :]
        & (keys[:, None] != keys[None, :]),
        1,
    )
    for label, upper in (("cross-dataset", cross), ("within-dataset, two known patients", within)):
        candidates = np.argwhere(upper & (bits <= CANDIDATE_BITS))
        scores, false_pairs = [], []
        for i, j in candidates:
            same, _, score = compare(arrays[i], hashes[i], arrays[j], hashes[j])
            scores.append(score)
            if same:
                false_pairs.append((files[i], files[j], score))
        print(
            f"false pairs: {len(false_pairs)} of {int(upper.sum())} {label} pairs "
            f"({len(candidates)} hash candidates at <= {CANDIDATE_BITS} bits, min distance {int(bits[upper].min())}; "
            f"highest verified score {max(scores, default=float('nan')):.3f}, threshold {MATCH_SCORE})"
        )
        for a, b, score in false_pairs:
            print(f"  FALSE PAIR {a} ~ {b} (score {score:.3f})")

    # Detection of made copies.
    rng = np.random.default_rng(args.seed)
    found: dict[str, list[tuple[bool, int, float]]] = defaultdict(list)
    for index in range(0, len(files), args.stride):
        for name, copy in variants(arrays[index], rng).items():
            found[name].append(compare(arrays[index], hashes[index], copy, window_hashes(copy)))
    total = sum(len(v) for v in found.values())
    hits = sum(same for v in found.values() for same, _, _ in v)
    print(f"detection: {hits} of {total} copies ({100 * hits / total:.1f}%)")
    for name, results in found.items():
        caught = sum(same for same, _, _ in results)
        lowest = min((s for _, _, s in results if not np.isnan(s)), default=float("nan"))
        worst_bits = max(b for _, b, _ in results)
        print(f"  {name:38s} {caught:4d}/{len(results)}  max bits {worst_bits:2d}  lowest score {lowest:.3f}")
        for (same, b, s), index in zip(results, range(0, len(files), args.stride), strict=True):
            if not same:
                print(
                    f"    missed {files[index]} ({arrays[index].shape[1]}x{arrays[index].shape[0]}): bits {b}, score {s:.3f}"
                )


if __name__ == "__main__":
    main()
