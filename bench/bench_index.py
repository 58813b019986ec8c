"""Benchmark: planning an SA-Med2D-20M-sized index (`medground build --plan-only`), memory and time.

Writes synthetic ``image2label_train.json`` ({image: [masks]}) and ``label2image_test.json`` ({mask:
image}) with the real naming scheme (``ct_00--AbdomenCT1K--Case_00220--x_0359.png``, 2D datasets
``x_ray--<dataset>--<case>--2d_none.png``; masks ``<image stem>_<structure>_<instance>.png``) at a
fraction of full size (4.6 M images, 19.7 M masks: 1 + Poisson(3.28) masks per image, about 4.3), from
31 sub-datasets (3D ones sliced along x, y and z, 2D ones one image per case; MR cases in several
sequences). Whole cases go to the test file with probability ``--test-share``; the test file is
mask-keyed and its masks are written instance by instance in a shuffled image order, so one image's
masks lie far apart (grouping them is real work). Both files are indented like the released ones.

Then runs ``medground build sa-med2d:DIR --plan-only`` as a child process, as users run it, and reports
its wall time and peak memory (``ru_maxrss`` of the waited child; each run in its own child). The
same-run baseline is what the source did before streaming: ``json.loads`` of both files, the mask-keyed
one inverted, the keys sorted (also a child; ``--no-baseline`` skips it, e.g. at full size where it
needs more memory than a small machine has).

    python bench/bench_index.py --fraction 0.001 0.01 [--work /tmp/bench_index] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

FULL_IMAGES = 4_600_000
MEAN_EXTRA_MASKS = 3.28  # 1 + Poisson(3.28): 4.28 masks per image, 19.7 M over 4.6 M images
# (modality prefixes, sub-dataset, structures it labels, slices per axis (0: a 2D dataset), share of images)
DATASETS: list[tuple[tuple[str, ...], str, int, int, float]] = [
    (("ct_00",), "AbdomenCT1K", 4, 220, 0.08),
    (("ct_00",), "AMOS2022", 15, 180, 0.06),
    (("mr_t1",), "AMOS2022MR", 13, 120, 0.01),
    (("ct_00",), "TotalSegmentator", 104, 300, 0.12),
    (("ct_00",), "FLARE22", 13, 160, 0.04),
    (("ct_00",), "KiTS21", 3, 200, 0.03),
    (("ct_00",), "LiTS", 2, 250, 0.03),
    (("ct_00",), "WORD", 16, 200, 0.03),
    (("ct_00",), "BTCV", 13, 150, 0.01),
    (("ct_00",), "CT_ORG", 6, 250, 0.02),
    (("ct_00",), "HaN_Seg", 30, 160, 0.01),
    (("ct_00",), "COVID19_CT", 3, 200, 0.02),
    (("ct_00",), "LUNA16", 3, 260, 0.03),
    (("ct_00",), "Verse", 26, 220, 0.03),
    (("mr_t1", "mr_t2", "mr_flair", "mr_t1ce"), "BraTS2021", 3, 155, 0.12),
    (("mr_t2", "mr_adc"), "ISLES2022", 1, 70, 0.01),
    (("mr_t2",), "Prostate158", 3, 30, 0.01),
    (("mr_00",), "ACDC", 3, 12, 0.01),
    (("mr_t1",), "MSD_Heart", 1, 110, 0.01),
    (("mr_t2",), "CHAOS_MR", 4, 36, 0.01),
    (("pet_00",), "autoPET", 1, 300, 0.04),
    (("x_ray",), "COVID_QU_Ex", 2, 0, 0.04),
    (("x_ray",), "covid_19_ct_cxr", 2, 0, 0.02),
    (("x_ray",), "Montgomery", 2, 0, 0.005),
    (("ultrasound",), "BUSI", 2, 0, 0.01),
    (("ultrasound",), "CAMUS", 3, 0, 0.01),
    (("endoscopy",), "Kvasir", 1, 0, 0.02),
    (("endoscopy",), "CVC_ClinicDB", 1, 0, 0.01),
    (("fundus",), "REFUGE", 2, 0, 0.005),
    (("dermoscopy",), "ISIC2018", 1, 0, 0.02),
    (("histopathology",), "MoNuSeg", 1, 0, 0.085),
]


def images(fraction: float, seed: int, test_share: float) -> Iterator[tuple[str, list[str], bool]]:
    """(image path, mask paths, in the test file) for about ``fraction`` of 4.6 M images."""
    rng = np.random.default_rng(seed)
    shares = np.array([d[4] for d in DATASETS])
    for prefixes, dataset, n_structures, slices, share in DATASETS:
        target = round(FULL_IMAGES * fraction * share / shares.sum())
        structures = [f"structure_{k:03d}" for k in range(n_structures)]
        made, case = 0, 0
        while made < target:
            test = bool(rng.random() < test_share)
            if slices:
                names = [
                    f"{prefix}--{dataset}--case_{case:05d}--{axis}_{index:04d}"
                    for prefix in prefixes
                    for axis in "xyz"
                    for index in range(slices)
                ]
            else:
                names = [f"{prefixes[0]}--{dataset}--case_{case:05d}--2d_none"]
            for stem in names[: target - made]:
                picked = rng.integers(0, n_structures, size=1 + rng.poisson(MEAN_EXTRA_MASKS))
                seen: dict[int, int] = {}
                masks = []
                for k in picked.tolist():
                    seen[k] = seen.get(k, -1) + 1
                    masks.append(f"SAMed2Dv1/masks/{stem}_{structures[k]}_{seen[k]:03d}.png")
                yield f"SAMed2Dv1/images/{stem}.png", masks, test
            made += min(len(names), target - made)
            case += 1


def write_index(folder: Path, fraction: float, seed: int, test_share: float) -> dict:
    """Write both index files into ``folder``; returns image and mask counts and file sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    tests: list[tuple[str, list[str]]] = []
    n_images = n_masks = 0
    with open(folder / "image2label_train.json", "w", encoding="utf-8") as train:
        train.write("{")
        first = True
        for image, masks, test in images(fraction, seed, test_share):
            n_images, n_masks = n_images + 1, n_masks + len(masks)
            if test:
                tests.append((image, masks))
                continue
            entry = json.dumps(masks, indent=4).replace("\n", "\n    ")
            train.write(("\n" if first else ",\n") + f"    {json.dumps(image)}: {entry}")
            first = False
        train.write("\n}\n")
    order = np.random.default_rng(seed + 1).permutation(len(tests))
    with open(folder / "label2image_test.json", "w", encoding="utf-8") as test_file:
        test_file.write("{")
        first = True
        for instance in range(max((len(m) for _, m in tests), default=0)):
            for i in order.tolist():
                image, masks = tests[i]
                if instance < len(masks):
                    test_file.write(
                        ("\n" if first else ",\n") + f"    {json.dumps(masks[instance])}: {json.dumps(image)}"
                    )
                    first = False
        test_file.write("\n}\n")
    (folder / "meta.json").write_text(json.dumps({"name": "sa_med2d_synthetic"}))
    sizes = {p.name: p.stat().st_size for p in folder.glob("*.json") if p.name != "meta.json"}
    return {"images": n_images, "masks": n_masks, "bytes": sizes}


BASELINE = """
import json, sys
from pathlib import Path
index = {}
for name in ("image2label_train.json", "label2image_test.json"):
    data = json.loads((Path(sys.argv[1]) / name).read_text(encoding="utf-8"))
    if name.startswith("label2image"):
        for mask, image in data.items():
            index.setdefault(image, []).append(mask)
    else:
        for image, masks in data.items():
            index.setdefault(image, []).extend(masks)
    del data
print(sum(len(sorted(set(index[image]))) for image in sorted(index)))
"""


def run_child(command: list[str]) -> tuple[float, float, float, str]:
    """(wall seconds, CPU seconds, peak RSS in MiB, stdout) of one child process, reaped here with
    ``wait4`` so the peak is this child's (with any children it waited for), not the maximum over
    earlier runs. CPU time (user + system) is the steadier number on a shared machine."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode:
            raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{err.read()[-2000:]}")
        return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.read()


def main() -> None:
    work = Path(ARGS.work)
    medground = str(Path(sys.executable).with_name("medground"))
    for fraction in ARGS.fraction:
        folder = work / f"samed2d_{fraction:g}"
        start = time.perf_counter()
        made = write_index(folder, fraction, ARGS.seed, ARGS.test_share)
        written = time.perf_counter() - start
        gib = sum(made["bytes"].values()) / 2**30
        print(
            f"fraction {fraction:g}: {made['images']} images, {made['masks']} masks "
            f"({made['masks'] / max(made['images'], 1):.2f} per image), index {gib:.2f} GiB "
            f"({', '.join(f'{k} {v / 2**20:.0f} MiB' for k, v in made['bytes'].items())}); written in {written:.0f} s"
        )
        wall, cpu, peak, out = run_child([medground, "build", f"sa-med2d:{folder}", "--plan-only"])
        total = out.splitlines()[-2].split()
        print(
            f"  plan-only (CLI): {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {peak:.0f} MiB; "
            f"total row: {' '.join(total)}"
        )
        if ARGS.baseline:
            wall, cpu, peak, out = run_child([sys.executable, "-c", BASELINE, str(folder)])
            print(
                f"  baseline json.loads + in-memory invert/sort: {wall:.1f} s wall, {cpu:.1f} s CPU, "
                f"peak RSS {peak:.0f} MiB"
            )
        if not ARGS.keep:
            shutil.rmtree(folder)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fraction", type=float, nargs="+", default=[0.001, 0.01])
    parser.add_argument("--work", default="/tmp/bench_index")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-share", type=float, default=0.2)
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--keep", action="store_true", help="Keep the generated index files.")
    ARGS = parser.parse_args()
    main()
