"""What every source provides: a cheap list of work items and a loader that turns one into samples.

An :class:`Item` is a small, picklable description of one image (or one volume) with the patient key
its split is drawn by. Planning lists items without decoding pixels; workers (local processes or a
Dask cluster) call :meth:`Source.load`, which yields :class:`~medground.types.Sample` objects for what
it could use and :class:`~medground.types.Rejected` entries, with reasons, for what it could not.

Three truths every source states once, here by shared helpers:

- **who the patient is** (:meth:`Source.patient`): the layout's own key (a ``case`` column, a DICOM
  PatientID, an SA-Med2D name, a volume's name, a 2D slice name's suffix: :func:`case_key`), under the
  dataset's ``meta.json`` ``"cases"`` (``"image"``: each image its own patient; ``"dataset"``: the
  patients are not known, so the whole dataset is kept together as one group, in one split;
  ``"unknown"``: nobody knows, all to train), ``"case_alias"`` (raw key -> the one key of a patient that
  other sources name differently: ``{"Case_00220": "kits19:case_00220"}``) and ``"case_namespace"`` (a
  prefix for ids that two datasets reuse for different patients); ``None`` when unknown;
- **which protocol labelled an image** (:meth:`Source.protocols`, ``Sample.meta["protocol"]``), so a
  structure is called absent only where that protocol labels it exhaustively, and which structures are
  labelled in its neighbouring slices (``Sample.meta["nearby"]``);
- **its modality** (:meth:`Source.modality_of`): what the dataset states wins; ``--modality`` only fills
  in where it states none, and a conflict or an unknown name is a warning in :attr:`Source.warnings`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import ClassVar

import numpy as np

from medground.io import ReadError, read_mask
from medground.modalities import is_known_modality, modality_from_sa_med2d_name, normalise_modality
from medground.types import Rejected, Sample

__all__ = [
    "NEARBY_SLICES",
    "Item",
    "LoadResult",
    "Source",
    "SourceError",
    "case_key",
    "clean_region",
    "labelled",
    "large_structures",
    "nearby_names",
    "plane_from_text",
    "protocol_of",
    "read_meta",
    "read_protocols",
    "resolve",
    "slice_position",
    "slice_positions",
]

LoadResult = Sample | Rejected

NEARBY_SLICES = 3  # a structure labelled this many slices away or nearer is not called absent

_SLICE_SUFFIX = re.compile(r"[_-](?:z|x|y|slice)?_?(\d+)$")
_CASES = ("image", "dataset", "unknown")


class SourceError(ValueError):
    """A source cannot be opened at all (missing index file, unknown layout); names path and fix."""


def _sa_med2d_parts(stem: str) -> list[str] | None:
    parts = stem.split("--")
    return parts if len(parts) >= 4 else None


def slice_position(stem: str) -> tuple[str, int] | None:
    """(case, slice index) of a 2D slice's file stem, or None when the name carries no slice index.

    ``ct_00--AbdomenCT1K--Case_00220--x_0359`` -> ("AbdomenCT1K--Case_00220--x", 359) (SA-Med2D: the
    dataset and case without the modality prefix, and the axis, since indices along different axes are
    not neighbours); ``BraTS2021_01646_z042`` -> ("BraTS2021_01646", 42); ``amos_0004_75`` ->
    ("amos_0004", 75). A trailing number counts as a slice index only if what remains still holds a
    digit, so ``img_001`` and ``IMD002`` carry none (a plain numbering of separate images).
    """
    parts = _sa_med2d_parts(stem)
    if parts is not None:
        match = re.fullmatch(r"([xyz])_(\d+)", parts[3])
        return (f"{parts[1]}--{parts[2]}--{match[1]}", int(match[2])) if match else None
    match = _SLICE_SUFFIX.search(stem)
    if match is None:
        return None
    rest = stem[: match.start()]
    return (rest, int(match[1])) if any(ch.isdigit() for ch in rest) else None


def _natural(name: str) -> list:
    """Sort key that orders digit runs by value: ``2.png`` before ``10.png``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def slice_positions(paths: Iterable[PurePath], depth: int) -> dict[PurePath, tuple[str, int]]:
    """(case, slice index) of each 2D slice file among ``paths``, for the neighbouring-slice rule.

    A name that carries its index (:func:`slice_position`) gives it. A file in a case folder, at least
    ``depth`` folders deep (``images/case_07/0005.png`` at depth 2: below the dataset's ``images/``),
    whose name does not, is a slice of that folder: its index is its rank among the folder's other such
    files in natural name order (``0005.png`` after ``0004.png``; ``2.png`` before ``10.png``).
    """
    found: dict[PurePath, tuple[str, int]] = {}
    folders: dict[PurePath, list[PurePath]] = {}
    for path in paths:
        position = slice_position(path.stem)
        if position is not None:
            found[path] = position
        elif len(path.parts) > depth:
            folders.setdefault(path.parent, []).append(path)
    for folder, files in folders.items():
        if len(files) > 1:
            for rank, path in enumerate(sorted(files, key=lambda p: _natural(p.name))):
                found[path] = (folder.as_posix(), rank)
    return found


def case_key(stem: str) -> str | None:
    """The patient key that a 2D image's file stem carries, or None when the name does not tell.

    SA-Med2D-20M names give "<dataset>--<case>" without the modality prefix, so the sequences of one
    subject are one patient (``mr_t1--BraTS2021--X--z_0042`` and ``mr_flair--BraTS2021--X--z_0042`` ->
    ``BraTS2021--X``); slice names give the name without the slice suffix (``BraTS2021_01646_z042`` ->
    ``BraTS2021_01646``, see :func:`slice_position`). Never use it on volume names.
    """
    parts = _sa_med2d_parts(stem)
    if parts is not None:
        return f"{parts[1]}--{parts[2]}"
    position = slice_position(stem)
    return position[0] if position else None


def nearby_names(
    position: tuple[str, int] | None, neighbours: dict[str, list[tuple[int, frozenset[str]]]]
) -> list[str]:
    """Raw structure keys labelled in other slices of the same case within :data:`NEARBY_SLICES`.

    ``neighbours`` maps a case (see :func:`slice_position`) to (slice index, keys labelled there).
    """
    if position is None:
        return []
    case, index = position
    found: set[str] = set()
    for other, names in neighbours.get(case, ()):
        if other != index and abs(other - index) <= NEARBY_SLICES:
            found |= names
    return sorted(found)


def read_meta(root: Path) -> dict:
    """``meta.json`` of a dataset folder, or an empty dict."""
    path = root / "meta.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SourceError(f"{path}: not valid JSON ({error}); fix or remove it") from error


def plane_from_text(text: str | None) -> str | None:
    """'axial', 'coronal' or 'sagittal' when the text names one."""
    for plane in ("axial", "coronal", "sagittal"):
        if text and plane in text.lower():
            return plane
    return None


def clean_region(text: str | None) -> str | None:
    """A body region without parenthesised notes: "brain (axial FLAIR slices)" -> "brain"."""
    return re.sub(r"\s*\([^)]*\)", "", text).strip() or None if text else None


def read_protocols(meta: dict, where: Path) -> dict[str, str] | None:
    """meta.json ``"protocols"``: file-name prefix -> labelling protocol, e.g.
    ``{"amos_": "AMOS", "s0": "TotalSegmentator"}`` for a collection that mixes sub-datasets with
    different label sets; None when absent. Bad values name the file."""
    raw = meta.get("protocols")
    if raw is None:
        return None
    if (
        not isinstance(raw, dict)
        or not raw
        or not all(isinstance(k, str) and k and isinstance(v, str) and v for k, v in raw.items())
    ):
        raise SourceError(
            f'{where}: "protocols" must map file-name prefixes to protocol names, '
            f'e.g. {{"amos_": "AMOS", "s0": "TotalSegmentator"}}; got {raw!r}'
        )
    return dict(raw)


def protocol_of(
    stem: str, prefixes: dict[str, str] | None, sa_med2d: bool, default: str | None
) -> str | None:
    """The protocol that labelled an image, by its file stem, or None when it cannot be told.

    With a prefix map (:func:`read_protocols`): the longest matching prefix's protocol (no match: None).
    Else in an SA-Med2D-20M collection: the sub-dataset and modality its name carries
    (``ct_00--AMOS--...`` -> "AMOS ct"; one sub-dataset labels other structures per modality: CHAOS
    labels the liver in CT, liver and spleen in MR; names without the convention: None, since SA-Med2D
    mixes sub-datasets with different label sets). Else ``default`` (a dataset labelled by one protocol).
    """
    if prefixes is not None:
        matches = [p for p in prefixes if stem.startswith(p)]
        return prefixes[max(matches, key=len)] if matches else None
    if sa_med2d:
        parts = _sa_med2d_parts(stem)
        return f"{parts[1]} {_prefix_modality(parts[0])}" if parts else None
    return default


@functools.lru_cache(maxsize=256)
def _prefix_modality(prefix: str) -> str | None:
    """The modality of an SA-Med2D name's first field (``ct_00`` -> "ct"); cached per prefix, since the
    name parser's paths would otherwise keep every one of millions of file names alive."""
    return modality_from_sa_med2d_name(f"{prefix}--_--_--_")


SA_MED2D_MIN_FRACTION = 0.00153
"""SA-Med2D-20M removed every mask under this share of its image (0.153%): a structure missing from one
of its images may be there, only small."""
LARGE_FACTOR = 10
"""A structure counts as large enough to have survived that filter wherever it is in the picture when
the median of its labelled masks covers at least this many times the threshold (1.53% of the image): a
liver, not an adrenal gland, a small vessel or a lesion."""
SIZE_SAMPLES = 16  # masks read per (protocol, structure) to measure that median (the first in file order)


def large_structures(masks: dict[tuple[str, str], list[str]]) -> set[tuple[str, str]]:
    """The (protocol, structure) pairs of an SA-Med2D collection whose labelled masks are large: the
    median foreground share of their first :data:`SIZE_SAMPLES` mask files (``masks``) is at least
    ``LARGE_FACTOR * SA_MED2D_MIN_FRACTION``. Only those may be called absent (see
    :data:`SA_MED2D_MIN_FRACTION`); a mask file that cannot be read counts as small."""
    large = set()
    for pair, paths in masks.items():
        shares = []
        for path in paths[:SIZE_SAMPLES]:
            try:
                mask = read_mask(path)
            except ReadError:
                shares.append(0.0)
                continue
            shares.append(float(np.count_nonzero(mask)) / max(1, mask.size))
        shares.sort()
        if shares and shares[len(shares) // 2] >= LARGE_FACTOR * SA_MED2D_MIN_FRACTION:
            large.add(pair)
    return large


def labelled(results: Iterable[LoadResult], payload: dict) -> Iterator[LoadResult]:
    """The results of a planar load, each Sample told which protocol labelled it and what is nearby.

    ``payload["protocol"]`` (an id of :meth:`Source.protocols`, None = unknown) and ``payload["nearby"]``
    (raw keys labelled in neighbouring slices) go to ``Sample.meta`` for the negatives, and
    ``payload["unsure"]`` (raw keys annotated in this image without a usable mask) joins
    ``meta["unsure"]``: none of those is called absent.
    """
    for result in results:
        if isinstance(result, Sample):
            result.meta["protocol"] = payload.get("protocol")
            result.meta["nearby"] = list(payload.get("nearby", ()))
            unsure = set(result.meta.get("unsure", ())) | set(payload.get("unsure", ()))
            if unsure:
                result.meta["unsure"] = sorted(unsure)
        yield result


@dataclass(frozen=True)
class Item:
    """One unit of work: an image with its masks, or a volume with its labels.

    ``key`` is unique within the source and stable across runs (it seeds everything about the item);
    ``case`` is the patient key that the split is drawn by (None: unknown, the item goes to train);
    ``payload`` holds what the loader needs (paths as strings, options).
    """

    source: str
    key: str
    case: str | None
    payload: dict = field(default_factory=dict, hash=False, compare=False)


class Source:
    """Base of all sources. Subclasses are plain dataclasses, so they pickle to workers."""

    kind: str = ""
    name: str = ""
    planning_only: tuple[str, ...] = ()  # attributes that only items() needs; not shipped to workers
    cases: str | None = None  # meta.json "cases": "image", "dataset", "unknown" or None (the layout's keys)
    case_namespace: str | None = None  # meta.json "case_namespace": prefix of every patient key
    case_alias: dict[str, str] | None = None  # meta.json "case_alias": raw key -> shared patient key
    layout: ClassVar[str] = ""  # the files this kind reads, one line: CLI help and errors show it

    @classmethod
    def detect(cls, path: Path) -> bool:
        """Whether ``path`` (a folder or file) is in this layout, by names and cheap peeks only.

        ``open_source`` asks the registered kinds in order; a kind that cannot be told apart is only
        reachable as ``KIND:PATH`` (this default)."""
        return False

    @property
    def warnings(self) -> list[str]:
        """What the build should tell the user about this source (modality conflicts, unknown names)."""
        return self.__dict__.setdefault("_warnings", [])

    def warn(self, message: str) -> None:
        """Record a warning once (the engine shows each and lists them in the manifest)."""
        if message not in self.warnings:
            self.warnings.append(message)

    def read_case_policy(self, meta: dict, where: Path) -> None:
        """Take ``cases``, ``case_alias`` and ``case_namespace`` from a dataset's meta.json; bad values name
        the file."""
        cases = meta.get("cases")
        if cases is not None and cases not in _CASES:
            raise SourceError(f'{where}: "cases" must be one of {", ".join(_CASES)}, got {cases!r}')
        namespace = meta.get("case_namespace")
        if namespace is not None and (not isinstance(namespace, str) or not namespace.strip()):
            raise SourceError(f'{where}: "case_namespace" must be a non-empty string, got {namespace!r}')
        alias = meta.get("case_alias")
        if alias is not None and (
            not isinstance(alias, dict)
            or not all(
                isinstance(k, str) and k and isinstance(v, str) and v.strip() for k, v in alias.items()
            )
        ):
            raise SourceError(
                f'{where}: "case_alias" must map this dataset\'s patient keys to the keys other sources use '
                f'for the same patients, e.g. {{"Case_00220": "kits19:case_00220"}}; got {alias!r}'
            )
        self.cases, self.case_namespace, self.case_alias = cases, namespace, alias

    def patient(self, derived: str | None, image_key: str, stated: str | None = None) -> str | None:
        """The patient key of one image: ``stated`` (a ``case`` column, a DICOM PatientID, a COCO image's
        ``patient_id``) wins; else ``derived`` (from the names) under the meta.json policy.

        ``"cases": "image"`` gives "<source>/<image_key>"; ``"cases": "dataset"`` gives "<source>/*" (one
        group, one split); ``"cases": "unknown"`` gives None; all three apply only to images whose patient
        nobody stated. A key listed in ``case_alias`` becomes its alias as written (the key that patient
        has in every source); else a ``case_namespace`` prefixes it ("NS:key"). None means unknown: the
        image goes to train.
        """
        if stated:
            key: str | None = stated
        elif self.cases == "unknown":
            return None
        elif self.cases == "dataset":
            key = f"{self.name}/*"
        else:
            key = f"{self.name}/{image_key}" if self.cases == "image" else derived
        if key is not None and self.case_alias and key in self.case_alias:
            return self.case_alias[key].strip()
        if key is None or not self.case_namespace:
            return key
        return f"{self.case_namespace}:{key}"

    def modality_of(self, stated: str | None, override: str | None, where: str) -> str | None:
        """The modality of ``where``: what the data states, else ``override`` (``--modality``), normalised.

        A stated modality is never overridden: when both are given and differ, the stated one is kept
        and a warning names both. A name outside the known vocabulary is kept, with a warning.
        """
        chosen = stated or override
        if not chosen:
            return None
        modality = normalise_modality(chosen)
        if stated and override and normalise_modality(override) != modality:
            self.warn(
                f"{self.name}: {where} states modality {stated!r} ({modality}); --modality {override!r} "
                "is not applied (it only fills in sources that state none)"
            )
        if not is_known_modality(modality):
            self.warn(
                f"{self.name}: modality {modality!r} of {where} is not in the known vocabulary; kept as "
                "stated (BiRD's protocol counts it as 'other')"
            )
        return modality

    def __getstate__(self) -> dict:
        """Pickled state for workers, without the (possibly huge) index that only planning reads."""
        return {k: v for k, v in self.__dict__.items() if k not in self.planning_only}

    def items(self) -> Iterator[Item | Rejected]:
        """Every item in a stable order, with no pixel decoding; unusable index rows come as Rejected."""
        raise NotImplementedError

    def load(self, item: Item) -> Iterator[LoadResult]:
        """Samples of one item (one for a 2D image, many for a volume) and rejections with reasons."""
        raise NotImplementedError

    def protocols(self) -> dict[str, list[str]]:
        """Protocol id -> raw keys of the structures that protocol labels exhaustively (run at planning).

        A sample's ``meta["protocol"]`` names its protocol; only that protocol's structures may be called
        absent from it. A sample without a known protocol gets only distant-anatomy negatives.
        """
        raise NotImplementedError

    def vocabulary(self) -> list[str]:
        """Raw keys of every structure this source annotates, over all its protocols."""
        return sorted({name for names in self.protocols().values() for name in names})


def resolve(root: Path, relative: str) -> Path:
    """A path from an index file, relative to the dataset folder (absolute paths kept)."""
    path = Path(relative)
    return path if path.is_absolute() else root / path
