"""Benchmark: `medground build` (through the CLI, as users run it) against the decode floor.

The shared medseg collection is replicated ``--copies`` times (distinct dataset folder names; images
and masks linked, not copied). In the same run we time

- the decode floor: decoding every input image and mask once with the same readers (1 process);
- `medground build --masks rle` and `--masks png` with 1 worker, each a fresh subprocess of the CLI
  into a fresh output folder (no report, no progress bar);
- ``--repeats`` alternating runs of the RLE build with 1 and with 2 workers (medians compared);
- the write floor: creating the RLE build's files again from memory (images, records; no mask files),
  which no computation can save; build / (decode floor + write floor) is the ratio to compare across
  runs on a disk slowed by earlier deletions (bench/RESULTS.md, "Measuring file creation on this disk");
- peak memory: the peak RSS of the 1-worker build process (where the build runs) on the collection
  x1 and x``copies``, to show it does not grow with the collection.

Nothing is deleted until the end (fresh folder names throughout), so no run pays for an earlier run's
deletions.

    python bench/bench_build.py [--copies 8] [--repeats 3] [--shared ../shared/data/medseg] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from medground.io import read_image, read_mask

HERE = Path(__file__).resolve().parent
# `medground` as its console script runs it, printing the process's own peak RSS (VmHWM: the memory of
# this program since exec; wait4's ru_maxrss would also count the parent's pages at fork) when it exits.
CLI = (
    "import atexit, sys\n"
    "def peak():\n"
    "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
    "    sys.stderr.write(f'\\nVmHWM_KB={hwm}\\n')\n"
    "atexit.register(peak)\n"
    "sys.argv[0] = 'medground'\n"
    "from medground.cli import app\n"
    "app()\n"
)


def count_pairs(root: Path) -> int:
    with open(root / "pairs.csv", newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def replicate(shared: Path, target: Path, copies: int, exclude: list[str]) -> list[Path]:
    """``copies`` copies of every dataset folder: csv/json files copied, images/ and masks/ symlinked."""
    datasets = sorted(p for p in shared.iterdir() if (p / "pairs.csv").exists() and p.name not in exclude)
    roots = []
    for r in range(copies):
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


def decode_floor(roots: list[Path]) -> tuple[float, float]:
    """(wall s, CPU s) to decode every input image and mask of ``roots`` once (this process, one thread)."""
    start, cpu = time.perf_counter(), time.process_time()
    for root in roots:
        with open(root / "pairs.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        for image in sorted({r["image"] for r in rows}):
            read_image(root / image)
        for row in rows:
            read_mask(root / row["mask"])
    return time.perf_counter() - start, time.process_time() - cpu


def cli_build(roots: list[Path], out: Path, masks: str, workers: int) -> tuple[float, float, float, dict]:
    """Run `medground build` in a subprocess: (wall s, CPU s of it and its workers, peak RSS MB of the
    CLI process, manifest). With 1 worker the build runs in the CLI process itself."""
    args = [sys.executable, "-c", CLI, "build", *map(str, roots), "--out", str(out), "--masks", masks]
    args += ["--workers", str(workers), "--no-report", "--no-progress"]
    start = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read().decode() if process.stderr else ""
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"build failed ({process.returncode}):\n{stderr[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    peak = int(stderr.rsplit("VmHWM_KB=", 1)[1].split()[0]) / 1024
    return wall, usage.ru_utime + usage.ru_stime, peak, manifest


def write_floor(out: Path, target: Path) -> tuple[float, int, int]:
    """Seconds to create the build's image, mask and records files again (same names and bytes, one
    thread), how many files and how many bytes: the part of a build that no computation can save."""
    files = [
        (p.relative_to(out), p.read_bytes())
        for folder in ("images", "masks", "records")
        for p in sorted((out / folder).rglob("*"))
        if p.is_file()
    ]
    start = time.perf_counter()
    for relative, data in files:
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return time.perf_counter() - start, len(files), sum(len(d) for _, d in files)


def output_size(out: Path) -> tuple[int, int]:
    """(files, bytes) under the build's images/, masks/ and records/."""
    files = [p for folder in ("images", "masks", "records") for p in (out / folder).rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--copies", type=int, default=8, help="replicas of the shared collection")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each worker count (median)")
    parser.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared" / "data" / "medseg")
    parser.add_argument("--exclude", nargs="*", default=[], help="dataset folder names to leave out")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the copies and outputs go (default: system temp)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        small = replicate(args.shared, work / "x1", 1, args.exclude)
        roots = small if args.copies == 1 else replicate(args.shared, work / "xN", args.copies, args.exclude)
        pairs = sum(count_pairs(r) for r in roots)
        load = os.getloadavg()[0]
        print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cpus, load {load:.1f}")
        print(f"collection x{args.copies}: {len(roots)} dataset folders, {pairs} image-mask pairs")

        floor, floor_cpu = decode_floor(roots)
        print(f"decode floor: {floor:.1f} s wall, {floor_cpu:.1f} s CPU ({pairs / floor:.0f} pairs/s)")
        png = cli_build(roots, work / "out-png-1", "png", 1)
        runs: dict[int, list[tuple[float, float, float, dict]]] = {1: [], 2: []}
        for repeat in range(args.repeats):
            for workers in (1, 2):
                runs[workers].append(cli_build(roots, work / f"out-rle-{workers}-{repeat}", "rle", workers))
        rle = runs[1][0]
        counts = rle[3]["counts"]
        print(
            f"build output: {counts['records']} records, {counts['images']} images, {counts['regions']} regions"
        )
        for name, run, out in (("png", png, "out-png-1"), ("rle", rle, "out-rle-1-0")):
            files, size = output_size(work / out)
            print(
                f"--masks {name}, 1 worker: {run[0]:.1f} s wall, {run[1]:.1f} s CPU; build/floor = "
                f"{run[0] / floor:.2f} wall, {run[1] / floor_cpu:.2f} CPU; {files} files, {size / 1e6:.1f} MB"
            )
        one = statistics.median(r[0] for r in runs[1])
        two = statistics.median(r[0] for r in runs[2])
        print(
            f"--masks rle, median of {args.repeats}: 1 worker {one:.1f} s ({[round(r[0], 1) for r in runs[1]]}), "
            f"2 workers {two:.1f} s ({[round(r[0], 1) for r in runs[2]]}): 2 workers {one / two:.2f}x faster; "
            f"CPU s 1 worker {[round(r[1], 1) for r in runs[1]]}, 2 workers {[round(r[1], 1) for r in runs[2]]}; "
            f"median build/floor (1 worker) = {one / floor:.2f} wall, "
            f"{statistics.median(r[1] for r in runs[1]) / floor_cpu:.2f} CPU"
        )
        written, files, size = write_floor(work / "out-rle-1-0", work / "rewrite")
        print(
            f"write floor: creating the RLE build's {files} files ({size / 1e6:.1f} MB) again takes {written:.1f} s; "
            f"build / (decode floor + write floor) = {rle[0] / (floor + written):.2f} (1 worker, first run), "
            f"{one / (floor + written):.2f} (median)"
        )
        x1 = cli_build(small, work / "out-rle-x1-1", "rle", 1)
        print(
            f"peak RSS of the 1-worker build process (VmHWM): x1 {x1[2]:.0f} MB, x{args.copies} "
            f"{[round(r[2]) for r in runs[1]]} MB (ratio {statistics.median(r[2] for r in runs[1]) / x1[2]:.2f}); "
            f"the 2-worker builds' main process: {[round(r[2]) for r in runs[2]]} MB"
        )


if __name__ == "__main__":
    main()
