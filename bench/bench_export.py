"""Benchmark: sharded exports (Parquet, WebDataset) against copying the same image bytes.

A build of the shared collection (``medground build ../shared/data/medseg/*/ --out BUILD``) is replicated
``--copies`` times (records re-keyed, images and masks hard-linked; the shards carry each region's mask
as RLE, so they read the masks). Each case is a fresh process, run 3 times with
the cases interleaved (median): the CLI's start alone (``medground export --help``, included in the export
lines), the floor (``shutil.copyfile`` of every record's image, paths streamed from the records), then
``medground export BUILD --format webdataset|parquet`` as users run it. Prints images/s, MiB/s of image
bytes, the ratio to the copy, and the peak RSS of each process at x1 and at x``--copies`` (flat memory =
the same peak at both sizes).

    python bench/bench_export.py BUILD [--copies 8] [--work /tmp/bench_export]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

COPY = """
import json, shutil, sys
from pathlib import Path
root, dest = Path(sys.argv[1]), Path(sys.argv[2])
for shard in sorted((root / "records").glob("*.jsonl")):
    for line in open(shard, encoding="utf-8"):
        rel = json.loads(line)["image"]
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, dest / rel)
"""


def replicate(build: Path, copies: int, target: Path) -> tuple[int, int]:
    """``copies`` copies of ``build``'s records under ``target`` (ids and image paths re-keyed ``~rK``,
    images hard-linked); returns (images, image bytes)."""
    records = [
        json.loads(line) for path in sorted((build / "records").glob("*.jsonl")) for line in path.open()
    ]
    (target / "records").mkdir(parents=True)
    count = size = 0
    with open(target / "records" / "shard-00000.jsonl", "w", encoding="utf-8") as out:
        for k in range(copies):
            for record in records:
                rel = Path(record["image"])
                image = Path(rel.parts[0], f"r{k}", *rel.parts[1:]).as_posix()
                (target / image).parent.mkdir(parents=True, exist_ok=True)
                os.link(build / rel, target / image)
                for mask in [r["mask"] for r in record.get("regions") or [] if r.get("mask")]:
                    if not (target / mask).exists():  # shared by the copies: the shards read them
                        (target / mask).parent.mkdir(parents=True, exist_ok=True)
                        os.link(build / mask, target / mask)
                out.write(json.dumps({**record, "id": f"{record['id']}~r{k}", "image": image}) + "\n")
                count += 1
                size += (build / rel).stat().st_size
    return count, size


def timed(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", type=Path)
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_export"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    medground = str(Path(sys.executable).with_name("medground"))
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}"
    )
    for copies in sorted({1, args.copies}):
        build = args.work / f"x{copies}"
        images, size = replicate(args.build, copies, build)
        print(f"\nx{copies}: {images} images, {size / 2**20:.0f} MiB of image bytes")
        cases = {  # "startup": the CLI's own start, which the export lines include
            "startup": [medground, "export", "--help"],
            "copy": [sys.executable, "-c", COPY, str(build), str(args.work / "copy")],
            "webdataset": [
                medground,
                "export",
                str(build),
                "-f",
                "webdataset",
                "--dest",
                str(args.work / "wds"),
            ],
            "parquet": [medground, "export", str(build), "-f", "parquet", "--dest", str(args.work / "pq")],
        }
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
        for _ in range(args.repeats):  # cases interleaved, so that a change of load hits all of them
            for name, command in cases.items():
                shutil.rmtree(args.work / "copy", ignore_errors=True)
                runs[name].append(timed(command))
        floor = statistics.median(r[0] for r in runs["copy"])
        for name, timings in runs.items():
            wall = statistics.median(r[0] for r in timings)
            peak = max(r[1] for r in timings)
            print(
                f"  {name:10s} {wall:6.2f} s  {images / wall:7.0f} images/s  {size / 2**20 / wall:6.1f} MiB/s  "
                f"{wall / floor:4.2f}x copy  peak RSS {peak:5.0f} MiB  "
                f"(runs: {', '.join(f'{r[0]:.2f}' for r in timings)})"
            )
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
