"""Benchmark: `medground build` against the decode floor, 1 and 2 workers.

The shared medseg collection is replicated (file links, distinct dataset names) to at least
``--pairs`` image-mask pairs. In the same run we time the floor, decoding every input image and mask
once with the same readers, and the build with 1 and 2 worker processes (no report). Prints pairs/s,
the build/floor ratio (wall and CPU time) and the 2-worker speed-up, and peak memory (max RSS of this
process and of the worker processes). Then the write floor: the time to create the build's output
files again from memory (one PNG per region instance), which no computation can save.

    python bench/bench_build.py [--pairs 2000] [--shared ../shared/data/medseg]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import resource
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from medground.data.api import build_dataset
from medground.data.records import RecordConfig
from medground.io import read_image, read_mask

HERE = Path(__file__).resolve().parent


def count_pairs(root: Path) -> int:
    with open(root / "pairs.csv", newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def replicate(shared: Path, target: Path, min_pairs: int, exclude: list[str]) -> list[Path]:
    """Copies of every dataset folder (csv/json copied, images and masks hard- or sym-linked)."""
    datasets = sorted(p for p in shared.iterdir() if (p / "pairs.csv").exists() and p.name not in exclude)
    per_round = sum(count_pairs(d) for d in datasets)
    rounds = -(-min_pairs // per_round)
    roots = []
    for r in range(rounds):
        for dataset in datasets:
            root = target / f"{dataset.name}_copy{r:02d}"
            root.mkdir(parents=True)
            for entry in dataset.iterdir():
                if entry.is_dir():
                    os.symlink(entry, root / entry.name)
                else:
                    shutil.copy(entry, root / entry.name)
            roots.append(root)
    return roots


def _decode_dataset(root: Path) -> int:
    pairs = 0
    with open(root / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for image in sorted({r["image"] for r in rows}):
        read_image(root / image)
    for row in rows:
        read_mask(root / row["mask"])
        pairs += 1
    return pairs


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def decode_floor(roots: list[Path], workers: int) -> float:
    start = time.perf_counter()
    if workers == 1:
        for root in roots:
            _decode_dataset(root)
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_decode_dataset, roots))
    return time.perf_counter() - start


def write_floor(out: Path, target: Path) -> tuple[float, int]:
    """Seconds to create the build's image and mask files again (same names, same bytes, one thread),
    and how many: the part of a build that no computation can save."""
    files = [
        (p.relative_to(out), p.read_bytes())
        for folder in ("images", "masks")
        for p in sorted((out / folder).rglob("*"))
        if p.is_file()
    ]
    start = time.perf_counter()
    for relative, data in files:
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return time.perf_counter() - start, len(files)


def timed_build(roots: list[Path], out: Path, workers: int) -> tuple[float, dict]:
    start = time.perf_counter()
    manifest = build_dataset(
        roots, out, RecordConfig(seed=0), workers=workers, report=False, progress=False, overwrite=True
    )
    return time.perf_counter() - start, manifest


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared" / "data" / "medseg")
    parser.add_argument("--exclude", nargs="*", default=[], help="dataset folder names to leave out")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the copies and outputs go (default: system temp)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        roots = replicate(args.shared, Path(tmp) / "collection", args.pairs, args.exclude)
        pairs = sum(count_pairs(r) for r in roots)
        print(
            f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cpus"
        )
        print(f"collection: {len(roots)} dataset folders, {pairs} image-mask pairs")
        rows = []
        for workers in (1, 2):
            cpu0 = cpu_seconds()
            floor = decode_floor(roots, workers)
            cpu1 = cpu_seconds()
            seconds, manifest = timed_build(roots, Path(tmp) / f"out{workers}", workers)
            cpu2 = cpu_seconds()
            rows.append((workers, floor, seconds, manifest))
            print(
                f"workers={workers}: floor {pairs / floor:7.1f} pairs/s ({floor:.1f} s)  build {pairs / seconds:7.1f} pairs/s "
                f"({seconds:.1f} s)  build/floor = {seconds / floor:.2f} wall, {(cpu2 - cpu1) / (cpu1 - cpu0):.2f} CPU"
                f"  records={manifest['counts']['records']}"
            )
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"peak RSS of the builds: main process {own:.0f} MB, largest worker {children:.0f} MB")
        written, count = write_floor(Path(tmp) / "out1", Path(tmp) / "rewrite")
        decode, build = rows[0][1], rows[0][2]
        print(
            f"write floor: creating the build's {count} image and mask files again takes {written:.1f} s; "
            f"build / (decode floor + write floor) = {build / (decode + written):.2f} (1 worker)"
        )
        speedup = rows[0][2] / rows[1][2]
        print(f"2 workers vs 1: {speedup:.2f}x faster (build); floor {rows[0][1] / rows[1][1]:.2f}x")


if __name__ == "__main__":
    main()
