"""Split leaks: one patient or one picture in two splits, within a build or across builds.

Reads only what a build wrote (``DIR/records/shard-*.jsonl``: each record's ``image``, ``source``,
``case`` = patient key or null, ``split``; and the saved images). Two checks:

- **patient keys**: every key in one split only, over all the builds given (one patient may appear in
  several builds, e.g. a train build and a test build). A null key (unknown patient) cannot be checked
  here; the build puts those images in train. An image with records in two splits is a leak too.
- **near duplicates** (optional, slower): saved images of different splits that are one picture, by the
  perceptual hashes of :mod:`medground.io.phash` (copies, JPEG re-encodes, resizes, crops of up to ~10%
  per side, mirrored or turned by 90 degrees) and a pixel check. The hashes are the ones the build
  stored in each record (``"phash"``; computed from the image for builds without them); candidates come
  from a multi-index search (:func:`medground.io.phash.near_pairs`), not from all pairs. Pairs within
  one split are not leaks and are not checked.

It also reports **look-alike keys**: patient keys of different sources that differ only in spelling
(``case_00220``, ``Case_00220``, ``AbdomenCT1K--Case_00220``, ``case_00220_0000``): maybe one patient
under two keys, which no key comparison can see; give them one key with ``case_alias`` in meta.json.

``medground build`` runs the key check on its own records (:func:`require_one_split_per_patient`) and
fails before writing its manifest when a key sits in two splits; look-alike keys in two splits are a
warning there.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from medground.io import ReadError, read_image
from medground.io.phash import (
    ORIENTATIONS,
    compare,
    decode_hashes,
    near_pairs,
    orient,
    stored_hashes,
    window_hashes,
)
from medground.progress import progress_bar

__all__ = [
    "DuplicateLeak",
    "ImageEntry",
    "LookalikeKeys",
    "PatientLeak",
    "SplitLeakError",
    "SplitReport",
    "check_splits",
    "find_lookalike_keys",
    "find_near_duplicates",
    "find_patient_leaks",
    "key_form",
    "load_images",
    "print_report",
    "require_one_split_per_patient",
]


class SplitLeakError(RuntimeError):
    """A build's records put one patient key in two splits."""


@dataclass(frozen=True)
class ImageEntry:
    """One saved image of a build: ``image`` is relative to ``build``; ``splits`` of its records;
    ``phash``: the near-duplicate hashes the build stored (None for builds without them)."""

    build: str
    image: str
    source: str
    case: str | None
    splits: tuple[str, ...]
    phash: str | None = None

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
    """Two saved images in different splits that are one picture (hash ``bits`` of 64, verified ``score``);
    ``orientation``: how the second is turned or mirrored from the first (an entry of
    :data:`medground.io.phash.ORIENTATIONS`, "0" when not)."""

    first: str
    first_split: str
    second: str
    second_split: str
    bits: int
    score: float
    orientation: str = "0"


@dataclass(frozen=True)
class LookalikeKeys:
    """Patient keys of two or more sources that differ only in spelling (same :func:`key_form`).

    ``keys`` maps each key to ``"SOURCE: split(s)"`` lines; ``splits``: whether they sit in more than one
    split (a leak if they are one patient)."""

    form: str
    keys: dict[str, list[str]]
    splits: bool


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
    lookalike_keys: list[LookalikeKeys] = field(default_factory=list)

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
    hashes: dict[str, str] = {}
    count = 0
    for records_file in records_files:
        for _, record in _records(records_file):
            image = record["image"]
            cases[image].add(record["case"])
            splits[image].add(record["split"])
            sources[image] = record["source"]
            if record.get("phash"):
                hashes[image] = record["phash"]
            count += 1
    entries = []
    for image in sorted(splits):
        known = sorted(c for c in cases[image] if c is not None)
        # One image has one patient; should its records disagree, each key is checked through the first.
        entries.append(
            ImageEntry(
                str(build),
                image,
                sources[image],
                known[0] if known else None,
                tuple(sorted(splits[image])),
                hashes.get(image),
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


def key_form(key: str) -> str | None:
    """How a patient key reads once spelling is set aside: lower case, without a ``NS:`` namespace, a
    collection prefix (``AbdomenCT1K--``), an nnU-Net channel suffix (``_0000``), separators and leading
    zeros: ``AbdomenCT1K--Case_00220`` and ``case_00220_0000`` -> ``case220``. None for keys medground
    made per source (``"<source>/<image>"`` of ``"cases": "image"`` or ``"dataset"``), which no other
    source shares."""
    if "/" in key:
        return None
    text = key.rpartition(":")[2].rpartition("--")[2].lower()
    text = re.sub(r"_\d{4}$", "", text)
    text = re.sub(r"[\s_.-]+", "", text)
    return re.sub(r"\d+", lambda m: str(int(m[0])), text) or None


def find_lookalike_keys(entries: list[ImageEntry]) -> list[LookalikeKeys]:
    """Groups of different patient keys, from two or more sources, with one :func:`key_form` (sorted)."""
    by_form: dict[str, dict[str, dict[str, set[str]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(set))
    )
    for entry in entries:
        form = key_form(entry.case) if entry.case is not None else None
        if form is not None:
            by_form[form][entry.case][entry.source].update(entry.splits)
    found = []
    for form, keys in sorted(by_form.items()):
        sources = {source for where in keys.values() for source in where}
        if len(keys) < 2 or len(sources) < 2:
            continue
        splits = {split for where in keys.values() for s in where.values() for split in s}
        lines = {
            key: [f"{source}: {', '.join(sorted(s))}" for source, s in sorted(where.items())]
            for key, where in sorted(keys.items())
        }
        found.append(LookalikeKeys(form, lines, len(splits) > 1))
    return found


def require_one_split_per_patient(build: str | Path, records_files: list[Path]) -> list[LookalikeKeys]:
    """Raise :class:`SplitLeakError` naming the keys when ``records_files`` put a patient in two splits;
    return the look-alike keys of different sources that sit in different splits (for a warning)."""
    entries, _ = _load_records(Path(build), records_files)
    leaks = find_patient_leaks(entries)
    if leaks:
        named = "; ".join(f"{leak.kind} {leak.key!r} in {', '.join(leak.where)}" for leak in leaks[:10])
        more = f" and {len(leaks) - 10} more" if len(leaks) > 10 else ""
        raise SplitLeakError(
            f"{build}: split leak, {named}{more}; a patient's images must share one split "
            "(check the sources' case keys and namespaces); `medground check-splits` shows them all"
        )
    return [group for group in find_lookalike_keys(entries) if group.splits]


def _stored(entry: ImageEntry) -> np.ndarray:
    """The near-duplicate hashes of an image: those its records carry, else computed from the file."""
    if entry.phash:
        try:
            return decode_hashes(entry.phash)
        except ValueError as error:
            raise ReadError(entry.path, f"its records' phash field is damaged ({error})") from error
    return stored_hashes(read_image(entry.path))


def find_near_duplicates(entries: list[ImageEntry], *, progress: bool = True) -> list[DuplicateLeak]:
    """Pairs of images in different splits that are one picture (see :mod:`medground.io.phash`).

    Takes each image's stored hashes (8 orientations, 81 windows; computed for images whose records
    carry none), finds candidate pairs with the multi-index search of :func:`near_pairs` (a window of one
    within :data:`~medground.io.phash.CANDIDATE_BITS` of the other in some orientation), keeps those of
    different splits, and checks each on pixels (:func:`compare` with the second image turned into the
    first's orientation). Raises ReadError for an image that cannot be read.
    """
    if len({e.split for e in entries}) < 2:
        return []
    with progress_bar(len(entries), "reading hashes", enabled=progress) as advance:
        stored = np.stack([_stored(entry) for entry in entries]) if entries else np.zeros((0, 89), np.uint64)
        advance(len(entries))
    splits = np.array([e.split for e in entries])
    candidates = near_pairs(stored)
    candidates = candidates[splits[candidates[:, 0]] != splits[candidates[:, 1]]]
    # one check per unordered pair: the first orientation (lowest index) the search found it in
    pairs: dict[tuple[int, int], tuple[int, int, int]] = {}
    for i, j, k in candidates.tolist():
        pairs.setdefault((min(i, j), max(i, j)), (i, j, k))
    leaks = []
    with progress_bar(len(pairs), "checking candidates", enabled=progress) as advance:
        for i, j, k in pairs.values():
            first, second = entries[i], entries[j]
            array_first, array_second = read_image(first.path), orient(read_image(second.path), k)
            same, distance, score = compare(
                array_first,
                window_hashes(array_first),
                array_second,
                window_hashes(array_second),
                candidate=True,
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
                        ORIENTATIONS[k],
                    )
                )
            advance(1)
    return sorted(leaks, key=lambda leak: (leak.first, leak.second))


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
        lookalike_keys=find_lookalike_keys(entries),
    )
    if near_duplicates:
        report.duplicate_leaks = find_near_duplicates(entries, progress=progress)
    return report


def _table(title: str, columns: tuple[str, ...]) -> Table:
    """An empty rich table with these column headers."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    return table


def print_report(report: SplitReport, console: Console) -> None:
    """Tables of the leaks and a one-line verdict."""
    if report.patient_leaks:
        table = _table("Patients (or images) in more than one split", ("kind", "key", "split", "where"))
        for leak in report.patient_leaks:
            for split, where in leak.where.items():
                table.add_row(leak.kind, leak.key, split, "\n".join(where))
        console.print(table)
    if report.duplicate_leaks:
        table = _table(
            "One picture in two splits (near duplicates)",
            ("image", "split", "image", "split", "turned", "hash bits", "score"),
        )
        for leak in report.duplicate_leaks:
            table.add_row(
                leak.first,
                leak.first_split,
                leak.second,
                leak.second_split,
                leak.orientation,
                str(leak.bits),
                f"{leak.score:.3f}",
            )
        console.print(table)
    if report.lookalike_keys:
        table = _table(
            "Patient keys of different sources that look alike (one patient? see case_alias)",
            ("reads as", "key", "where", "in two splits"),
        )
        for group in report.lookalike_keys:
            for key, where in group.keys.items():
                table.add_row(group.form, key, "\n".join(where), "yes" if group.splits else "no")
        console.print(table)
    duplicates = (
        f"{len(report.duplicate_leaks)} near-duplicate pairs"
        if report.near_duplicates_checked
        else "near duplicates not checked"
    )
    verdict = "clean" if report.clean else "LEAK"
    console.print(
        f"{verdict}: {report.images} images, {report.records} records in {len(report.builds)} build(s); "
        f"{len(report.patient_leaks)} patient/image keys in two splits, {duplicates}, "
        f"{len(report.lookalike_keys)} groups of look-alike keys; "
        f"{report.unknown_patient_images} images of unknown patient (their key cannot be checked)"
    )
