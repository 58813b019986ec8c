"""SA-Med2D-20M JSON indexes: ``image2label_train.json`` ({image: [masks]}) and
``label2image_test.json`` ({mask: image}).

Paths in the index are relative to the folder that holds the dataset's top folder (``data_demo/...``);
they are resolved against the index's folder, then its parent, then with the first component
dropped. Mask file names are ``<image stem>_<structure>_<instance>.png``. The modality comes from the
file-name prefix (``ct_00--AbdomenCT1K--Case_00220--x_0359.png`` -> ct); names without a modality
prefix (the demo's ``amos_0004_75``) take the folder's ``meta.json`` modality, else ``--modality``.

SA-Med2D-20M mixes 31 sub-datasets with different label sets, so each image's labelling protocol is
the sub-dataset and modality its name carries (``AbdomenCT1K ct``): only structures that protocol labels
may be called absent, and only those large enough to have survived SA-Med2D's removal of masks under
0.153% of the image (:func:`~medground.data.sources.base.large_structures`: the median of a few of their
masks covers 1.53% or more). The patient is "<dataset>--<case>" without the modality prefix (the sequences of one
subject are one patient). Slices of one case (``--x_0359``) know which structures their neighbours
within a few slices label. Names without the convention take the ``protocols`` prefix map of the
folder's ``meta.json``, else their protocol is unknown (distant-anatomy negatives only).

The full index files are several GB of JSON (4.6 M images, 19.7 M masks), so they are never held in
memory: opening the source streams them (``ijson``) into a private temporary SQLite database on disk
and sorts there (``label2image`` is keyed by mask, so an image's masks can sit anywhere in the file).
Planning then reads images in sorted key order with their sorted, de-duplicated masks (the same order
as reading the whole index would give), and neighbouring slices come from one sorted pass per case.
Memory stays bounded by SQLite's page cache, one image's masks, one case's slices and the structure
vocabulary. The database takes about 2.5x the index files' size on disk (a 10% synthetic index: 215
MiB of JSON, 504 MiB of database) in SQLite's temporary folder (``SQLITE_TMPDIR``, else ``TMPDIR``).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import ijson

from medground.data.sources.base import (
    NEARBY_SLICES,
    SIZE_SAMPLES,
    Item,
    SourceError,
    case_key,
    clean_region,
    large_structures,
    protocol_of,
    read_meta,
    read_protocols,
    slice_position,
)
from medground.data.sources.peek import json_first_entry
from medground.data.sources.planar import MaskSpec, PlanarSource
from medground.io import IMAGE_SUFFIXES
from medground.modalities import modality_from_sa_med2d_name, plane_from_sa_med2d_name
from medground.types import Rejected

__all__ = ["SaMed2dSource", "INDEX_NAMES"]

INDEX_NAMES = ("image2label_train.json", "label2image_test.json")
_INSTANCE = re.compile(r"^(?P<name>.+?)_(?P<instance>\d{3})$")
_CACHE_KIB = 65536  # SQLite page cache of the index database (KiB); the rest of it stays on disk
_BATCH = 500  # rows per insert batch (the Python objects held at once)


def _structure(mask_stem: str, image_stem: str) -> tuple[str, int | None]:
    rest = mask_stem[len(image_stem) + 1 :] if mask_stem.startswith(image_stem + "_") else mask_stem
    match = _INSTANCE.match(rest)
    return (match["name"], int(match["instance"])) if match else (rest, None)


def _stem(path: str) -> str:
    """``Path(path).stem`` by string search (called twice per mask: 19.7 M masks at full size)."""
    name = path[path.rfind("/") + 1 :]
    dot = name.rfind(".")
    return name[:dot] if 0 < dot < len(name) - 1 else name


def _pairs(file: Path) -> Iterator[tuple[str, str | None]]:
    """(image, mask) rows of one index file, streamed; an image listed with no masks gives (image, None).

    ``label2image*`` files map a mask to its image; any other index maps an image to a list of masks.
    Malformed files raise :class:`SourceError` naming the file, the entry and the reason.
    """
    mask_keyed = file.name.startswith("label2image")
    with open(file, "rb") as handle:
        head = handle.read(4096).lstrip()
        if not head.startswith(b"{"):
            raise SourceError(
                f"{file}: an SA-Med2D index must be one JSON object, {{image: [masks]}} "
                "(or {mask: image} in label2image*.json)"
            )
        handle.seek(0)
        try:
            for key, value in ijson.kvitems(handle, ""):
                if mask_keyed:
                    if not isinstance(value, str):
                        raise SourceError(
                            f"{file}: mask {key!r} maps to {_short(value)}; label2image maps each mask to one image path"
                        )
                    yield value, key
                elif isinstance(value, list) and all(isinstance(m, str) for m in value):
                    yield from ((key, m) for m in value) if value else ((key, None),)
                else:
                    raise SourceError(
                        f"{file}: image {key!r} maps to {_short(value)}, not a list of mask paths; an index of "
                        "{mask: image} must be named label2image*.json"
                    )
        except ijson.JSONError as error:
            raise SourceError(f"{file}: not valid JSON ({error})") from error


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _batched(rows: Iterable[tuple], size: int = _BATCH) -> Iterator[list[tuple]]:
    """Lists of ``size`` rows (the last one shorter), for ``executemany`` without holding every row."""
    iterator = iter(rows)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


@dataclass
class SaMed2dSource(PlanarSource):
    """One or both SA-Med2D-20M index files (a folder holding them, or a file)."""

    path: Path
    name: str = ""
    modality: str | None = None
    kind: str = "sa-med2d"
    planning_only: tuple[str, ...] = ("_db", "_folders", "_protocols", "_sizes", "_large", "_vocabulary")
    layout: ClassVar[str] = (
        "SA-Med2D-20M image2label_train.json / label2image_test.json (the file, another JSON of that "
        "shape, or a folder holding them); masks <image>_<structure>_<instance>.png"
    )

    @classmethod
    def detect(cls, path: Path) -> bool:
        """A folder holding an index file, an index file by name, or a JSON object whose first entry maps
        an image path to a path or a list of paths (not any .json: labels.json or COCO files are not)."""
        if path.is_dir():
            return any((path / name).is_file() for name in INDEX_NAMES)
        if path.name in INDEX_NAMES:
            return path.is_file()
        entry = json_first_entry(path)
        return (
            entry is not None
            and Path(entry[0]).suffix.lower() in IMAGE_SUFFIXES
            and entry[1] in ("string", "list of strings")
        )

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        files = (
            [self.path]
            if self.path.is_file()
            else [self.path / n for n in INDEX_NAMES if (self.path / n).exists()]
        )
        if not files:
            raise SourceError(f"{self.path}: no SA-Med2D index ({' or '.join(INDEX_NAMES)}) found")
        self.base = files[0].parent
        meta = read_meta(self.base)
        self.name = self.name or meta.get("name") or self.base.name
        self.stated_modality = meta.get("modality")
        self.default_modality = self.modality_of(self.stated_modality, self.modality, "meta.json")
        self.read_case_policy(meta, self.base / "meta.json")
        self.prefixes = read_protocols(meta, self.base / "meta.json")
        self.body_region = clean_region(meta.get("body_region"))
        self.display = meta.get("display")
        self._folders: dict[str, list[tuple[str, bool]]] = {}
        self._protocols: dict[str, set[str]] = {}
        self._sizes: dict[tuple[str, str], list[str]] = {}  # a few mask files per (protocol, structure)
        self._vocabulary: set[str] = set()
        self._db = self._index(files)

    def _index(self, files: list[Path]) -> sqlite3.Connection:
        """Stream the index files into a private on-disk database (deleted when closed) and sort it:
        ``images`` (id = rank in sorted key order, image, its sorted masks, slice case and index, the
        structures labelled there) and ``nearby`` (id -> structures labelled in neighbouring slices)."""
        db = sqlite3.connect("")  # "": a temporary database on disk, removed when the connection closes
        db.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("CREATE TABLE pairs (image TEXT NOT NULL, mask TEXT)")
        for file in files:
            for batch in _batched(_pairs(file)):
                db.executemany("INSERT INTO pairs VALUES (?, ?)", batch)
        db.execute(
            "CREATE TABLE images (id INTEGER PRIMARY KEY, image TEXT, masks TEXT, slice_case TEXT, "
            "slice INTEGER, names TEXT)"
        )
        # SQLite compares TEXT as UTF-8 bytes, which is code-point order: Python's sorted() order.
        rows = db.execute("SELECT image, mask FROM pairs ORDER BY image, mask")
        grouped = itertools.groupby(rows, key=lambda row: row[0])
        for batch in _batched(
            self._image_rows(rank, image, group) for rank, (image, group) in enumerate(grouped)
        ):
            db.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?)", batch)
        db.execute("DROP TABLE pairs")
        db.execute("CREATE TABLE nearby (id INTEGER PRIMARY KEY, names TEXT)")
        slices = db.execute(
            "SELECT id, slice_case, slice, names FROM images WHERE slice_case IS NOT NULL "
            "ORDER BY slice_case, slice"
        )
        for _, case in itertools.groupby(slices, key=lambda row: row[1]):
            db.executemany("INSERT INTO nearby VALUES (?, ?)", _nearby(list(case)))
        db.commit()
        return db

    def _image_rows(self, rank: int, image: str, group: Iterable[tuple[str, str | None]]) -> tuple:
        """One ``images`` row; also adds the image's structures to its protocol's and the vocabulary."""
        masks = sorted({mask for _, mask in group if mask is not None})
        stem = _stem(image)
        names = sorted({_structure(_stem(m), stem)[0] for m in masks})
        self._vocabulary.update(names)
        protocol = protocol_of(stem, self.prefixes, True, None)
        if protocol is not None:
            self._protocols.setdefault(protocol, set()).update(names)
            for mask in masks:
                sample = self._sizes.setdefault((protocol, _structure(_stem(mask), stem)[0]), [])
                if len(sample) < SIZE_SAMPLES:
                    sample.append(self._resolve(mask))
        position = slice_position(stem)
        case, index = position if position is not None else (None, None)
        return rank, image, json.dumps(masks), case, index, json.dumps(names)

    def _resolve(self, relative: str) -> str:
        """An index path on disk: the first of ``base/relative``, ``base/../relative`` and ``base/relative``
        without its first component that exists, else the last (its load then says it is missing).

        The candidate folders are worked out once per folder of the index (a file can only exist where
        its folder does); per file only strings are joined (24 M paths at full size)."""
        folder, name = os.path.split(relative)
        candidates = self._folders.get(folder)
        if candidates is None:
            roots = [self.base / folder, self.base.parent / folder, self.base / Path(*Path(folder).parts[1:])]
            candidates = self._folders[folder] = [(os.path.join(root, ""), root.is_dir()) for root in roots]
        for root, exists in candidates:
            if exists and os.path.exists(root + name):
                return root + name
        return candidates[-1][0] + name

    def items(self) -> Iterator[Item | Rejected]:
        rows = self._db.execute(
            "SELECT i.image, i.masks, n.names FROM images i LEFT JOIN nearby n ON n.id = i.id ORDER BY i.id"
        )
        for image, masks, nearby in rows:
            stem, name = _stem(image), image[image.rfind("/") + 1 :]  # no Path: 3.11 interns its parts
            named = modality_from_sa_med2d_name(name)
            if named is None:
                modality = self.default_modality
            else:
                modality = self.modality_of(named, self.modality, "its file names")
            if modality is None:
                yield Rejected(
                    image, "no modality in the file name and none in meta.json; pass --modality", self.name
                )
                continue
            specs = []
            for mask in json.loads(masks):
                structure, instance = _structure(_stem(mask), stem)
                specs.append(MaskSpec(self._resolve(mask), structure, instance=instance))
            payload = {
                "image": self._resolve(image),
                "masks": specs,
                "modality": modality,
                "plane": plane_from_sa_med2d_name(name),
                "protocol": protocol_of(stem, self.prefixes, True, None),
                "nearby": json.loads(nearby) if nearby else [],
            }
            yield Item(self.name, stem, self.patient(case_key(stem), stem), payload)

    def protocols(self) -> dict[str, list[str]]:
        """Protocol -> its structures that are large enough to have survived SA-Med2D's small-mask filter
        (:func:`large_structures`): a smaller one missing from an image may be there, filtered out."""
        if "_large" not in self.__dict__:
            self.__dict__["_large"] = large_structures(self._sizes)
        large = self.__dict__["_large"]
        return {
            p: sorted(n for n in names if (p, n) in large) for p, names in sorted(self._protocols.items())
        }

    def vocabulary(self) -> list[str]:
        """Every structure of the index, whatever its protocol (also images whose protocol is unknown)."""
        return sorted(self._vocabulary)


def _nearby(case: list[tuple[int, str, int, str]]) -> Iterator[tuple[int, str]]:
    """(id, structures labelled within :data:`NEARBY_SLICES` other slices) for the ``images`` rows of one
    case, sorted by slice; images with nothing nearby are left out (the same sets as
    :func:`~medground.data.sources.base.nearby_names`, in one pass instead of one per image)."""
    at: dict[int, set[str]] = {}
    for _, _, index, names in case:
        at.setdefault(index, set()).update(json.loads(names))
    for row_id, _, index, _ in case:
        found: set[str] = set()
        for other in range(index - NEARBY_SLICES, index + NEARBY_SLICES + 1):
            if other != index:
                found |= at.get(other, set())
        if found:
            yield row_id, json.dumps(sorted(found))
