"""Split leaks: one patient or one picture in two splits, within a build or across builds.

Reads only what a build wrote (``DIR/records/shard-*.jsonl``: each record's ``image``, ``source``,
``case`` = patient key or null, ``split``; and the saved images). Two checks:

- **patient keys**: every key in one split only, over all the builds given (one patient may appear in
  several builds, e.g. a train build and a test build). A null key (unknown patient) cannot be checked
  here; the build puts those images in train. An image with records in two splits is a leak too.
- **near duplicates** (optional, slower): every saved image against every image of another split, with
  the perceptual hash and pixel check of :mod:`medground.io.phash` (copies, JPEG re-encodes, resizes,
  crops of up to ~10% per side). Pairs within one split are not leaks and are not compared.

``medground build`` runs the key check on its own records (:func:`require_one_split_per_patient`) and
fails before writing its manifest when a key sits in two splits.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from medground.io import ReadError, read_image
from medground.io.phash import CANDIDATE_BITS, compare, hamming, window_hashes
from medground.progress import progress_bar

__all__ = [
    "DuplicateLeak",
    "ImageEntry",
    "PatientLeak",
    "SplitLeakError",
    "SplitReport",
    "check_splits",
    "find_near_duplicates",
    "find_patient_leaks",
    "load_images",
    "print_report",
    "require_one_split_per_patient",
]


class SplitLeakError(RuntimeError):
    """A build's records put one patient key in two splits."""


@dataclass(frozen=True)
class ImageEntry:
    """One saved image of a build: ``image`` is relative to ``build``; ``splits`` of its records."""

    build: str
    image: str
    source: str
    case: str | None
    splits: tuple[str, ...]

    @property
    def split(self) -> str:
        return self.splits[0]

    @property
    def path(self) -> Path:
        return Path(self.build) / self.image


@dataclass(frozen=True)
class PatientLeak:
    """A patient key (``kind="patient"``) or one image (``kind="image"``) with records in two or more splits.

    ``where`` maps each split to ``"BUILD: SOURCE (N images)"`` lines.
    """

    kind: str
    key: str
    where: dict[str, list[str]]


@dataclass(frozen=True)
class DuplicateLeak:
    """Two saved images in different splits that are one picture (hash ``bits`` of 64, verified ``score``)."""

    first: str
    first_split: str
    second: str
    second_split: str
    bits: int
    score: float


@dataclass
class SplitReport:
    """What :func:`check_splits` found; ``clean`` when no leak of either kind."""

    builds: list[str]
    records: int
    images: int
    unknown_patient_images: int
    patient_leaks: list[PatientLeak] = field(default_factory=list)
    duplicate_leaks: list[DuplicateLeak] = field(default_factory=list)
    near_duplicates_checked: bool = False

    @property
    def clean(self) -> bool:
        return not self.patient_leaks and not self.duplicate_leaks

    def to_dict(self) -> dict:
        return {"clean": self.clean, **asdict(self)}


def _records(records_file: Path) -> Iterable[tuple[int, dict]]:
    with open(records_file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ReadError(records_file, f"line {number} is not JSON ({error.msg})") from error
            missing = [k for k in ("image", "source", "case", "split") if k not in record]
            if not isinstance(record, dict) or missing:
                raise ReadError(records_file, f"line {number} is not a medground record (missing {missing})")
            yield number, record


def _load_records(build: Path, records_files: Iterable[Path]) -> tuple[list[ImageEntry], int]:
    """Group the records of ``records_files`` by image: one :class:`ImageEntry` per saved image."""
    cases: dict[str, set[str | None]] = defaultdict(set)
    splits: dict[str, set[str]] = defaultdict(set)
    sources: dict[str, str] = {}
    count = 0
    for records_file in records_files:
        for _, record in _records(records_file):
            image = record["image"]
            cases[image].add(record["case"])
            splits[image].add(record["split"])
            sources[image] = record["source"]
            count += 1
    entries = []
    for image in sorted(splits):
        known = sorted(c for c in cases[image] if c is not None)
        # One image has one patient; should its records disagree, each key is checked through the first.
        entries.append(
            ImageEntry(
                str(build), image, sources[image], known[0] if known else None, tuple(sorted(splits[image]))
            )
        )
    return entries, count


def load_images(build: str | Path) -> tuple[list[ImageEntry], int]:
    """The saved images of a build folder and its number of records. Raises ReadError for a folder
    that is not a build (no ``records/shard-*.jsonl``) or a record line that is not a record."""
    folder = Path(build)
    files = sorted((folder / "records").glob("shard-*.jsonl"))
    if not files:
        raise ReadError(
            folder, "no records/shard-*.jsonl here; expected the output folder of `medground build`"
        )
    return _load_records(folder, files)


def find_patient_leaks(entries: list[ImageEntry]) -> list[PatientLeak]:
    """Patient keys, and single images, whose records sit in more than one split (sorted by key)."""
    by_key: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for entry in entries:
        if entry.case is not None:
            for split in entry.splits:
                by_key[entry.case][split][f"{entry.build}: {entry.source}"] += 1
    leaks = [
        PatientLeak(
            "patient",
            key,
            {s: [f"{w} ({n} images)" for w, n in sorted(c.items())] for s, c in sorted(splits.items())},
        )
        for key, splits in sorted(by_key.items())
        if len(splits) > 1
    ]
    leaks += [
        PatientLeak("image", str(e.path), {s: [f"{e.build}: {e.source} (1 image)"] for s in e.splits})
        for e in entries
        if len(e.splits) > 1
    ]
    return leaks


def require_one_split_per_patient(build: str | Path, records_files: list[Path]) -> None:
    """Raise :class:`SplitLeakError` naming the keys when ``records_files`` put a patient in two splits."""
    entries, _ = _load_records(Path(build), records_files)
    leaks = find_patient_leaks(entries)
    if leaks:
        named = "; ".join(f"{leak.kind} {leak.key!r} in {', '.join(leak.where)}" for leak in leaks[:10])
        more = f" and {len(leaks) - 10} more" if len(leaks) > 10 else ""
        raise SplitLeakError(
            f"{build}: split leak, {named}{more}; a patient's images must share one split "
            "(check the sources' case keys and namespaces); `medground check-splits` shows them all"
        )


def find_near_duplicates(entries: list[ImageEntry], *, progress: bool = True) -> list[DuplicateLeak]:
    """Pairs of images in different splits that are one picture (see :mod:`medground.io.phash`).

    Hashes every image once (256 window hashes), then compares each image's full-frame hash with all
    windows of every image of another split (quadratic in the number of images, vectorised) and checks
    the few candidates on pixels. Raises ReadError for an image that cannot be read.
    """
    if len({e.split for e in entries}) < 2:
        return []
    hashes = np.zeros((len(entries), 256), dtype=np.uint64)
    with progress_bar(len(entries), "hashing images", enabled=progress) as advance:
        for index, entry in enumerate(entries):
            hashes[index] = window_hashes(read_image(entry.path))
            advance(1)
    splits = np.array([e.split for e in entries])
    full = hashes[:, 0]
    leaks = []
    block = 64
    with progress_bar(len(entries), "comparing", enabled=progress) as advance:
        for start in range(0, len(entries), block):
            rows = slice(start, min(start + block, len(entries)))
            # bits[i, j]: the closer of full(i) to a window of j and full(j) to a window of i.
            bits = np.minimum(
                hamming(full[rows, None, None], hashes[None, :, :]).min(axis=2),
                hamming(full[None, :, None], hashes[rows, None, :]).min(axis=2),
            )
            ahead = np.arange(len(entries))[None, :] > np.arange(rows.start, rows.stop)[:, None]
            other_split = splits[rows, None] != splits[None, :]
            for i, j in np.argwhere((bits <= CANDIDATE_BITS) & ahead & other_split):
                first, second = entries[rows.start + int(i)], entries[int(j)]
                same, distance, score = compare(
                    read_image(first.path),
                    hashes[rows.start + int(i)],
                    read_image(second.path),
                    hashes[int(j)],
                )
                if same:
                    leaks.append(
                        DuplicateLeak(
                            str(first.path),
                            first.split,
                            str(second.path),
                            second.split,
                            distance,
                            round(score, 3),
                        )
                    )
            advance(rows.stop - rows.start)
    return leaks


def check_splits(
    builds: list[str | Path], *, near_duplicates: bool = True, progress: bool = True
) -> SplitReport:
    """Check one or more build folders together for patient-key and (optionally) near-duplicate leaks."""
    entries: list[ImageEntry] = []
    records = 0
    for build in builds:
        found, count = load_images(build)
        entries += found
        records += count
    report = SplitReport(
        builds=[str(b) for b in builds],
        records=records,
        images=len(entries),
        unknown_patient_images=sum(e.case is None for e in entries),
        patient_leaks=find_patient_leaks(entries),
        near_duplicates_checked=near_duplicates,
    )
    if near_duplicates:
        report.duplicate_leaks = find_near_duplicates(entries, progress=progress)
    return report


def print_report(report: SplitReport, console: Console) -> None:
    """Tables of the leaks and a one-line verdict."""
    if report.patient_leaks:
        table = Table(title="Patients (or images) in more than one split")
        for column in ("kind", "key", "split", "where"):
            table.add_column(column)
        for leak in report.patient_leaks:
            for split, where in leak.where.items():
                table.add_row(leak.kind, leak.key, split, "\n".join(where))
        console.print(table)
    if report.duplicate_leaks:
        table = Table(title="One picture in two splits (near duplicates)")
        for column in ("image", "split", "image", "split", "hash bits", "score"):
            table.add_column(column)
        for leak in report.duplicate_leaks:
            table.add_row(
                leak.first,
                leak.first_split,
                leak.second,
                leak.second_split,
                str(leak.bits),
                f"{leak.score:.3f}",
            )
        console.print(table)
    duplicates = (
        f"{len(report.duplicate_leaks)} near-duplicate pairs"
        if report.near_duplicates_checked
        else "near duplicates not checked"
    )
    verdict = "clean" if report.clean else "LEAK"
    console.print(
        f"{verdict}: {report.images} images, {report.records} records in {len(report.builds)} build(s); "
        f"{len(report.patient_leaks)} patient/image keys in two splits, {duplicates}; "
        f"{report.unknown_patient_images} images of unknown patient (their key cannot be checked)"
    )
