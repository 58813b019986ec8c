"""COCO instance-segmentation files: ``medground build coco:instances.json``.

The JSON holds ``images`` (``id``, ``file_name``, ``width``, ``height``; optional ``patient_id`` or
``case``: the patient key), ``categories`` (``id``, ``name``) and ``annotations`` (``id``, ``image_id``,
``category_id``, ``segmentation``, ``iscrowd``). ``file_name`` is resolved against the JSON's folder,
then against an ``images/`` folder beside it. A segmentation is

- polygons ``[[x0, y0, x1, y1, ...], ...]`` in COCO pixel coordinates (pixel (x, y) is the cell
  [x, x + 1) x [y, y + 1)), rasterised by :func:`medground.io.fill_polygon`: a pixel is inside when its
  centre is (pycocotools' own rasteriser differs from this on boundary pixels only); the polygons of one
  annotation are united;
- RLE ``{"size": [h, w], "counts": [...]}`` (uncompressed) or ``"counts": "..."`` (COCO's compressed
  string), decoded by :func:`medground.io.decode_rle` (pycocotools, after the counts are checked to
  cover exactly h x w pixels).

Each ``iscrowd: 0`` annotation is one instance of its category: one region, however many pieces (the
annotator drew one object). An ``iscrowd: 1`` annotation covers several objects whose outlines are not
separated; it is read like a semantic mask of its category (split into connected components, specks
dropped), as medseg masks are. Bad annotations (unknown image or category, no segmentation, malformed
polygons or RLE, an RLE of another size than its image) are rejected with the reason and the
annotation's id; the image is kept as long as one annotation is usable, and an image with none is
rejected. The decoded masks then get the checks of every 2D source (:func:`load_planar`: the image's
real size, empty masks).

The file is never held in memory (instances files of large collections are GB): opening the source
streams its ``categories``, ``images`` and ``annotations`` lists (ijson, one pass each) into a private
temporary SQLite database on disk, because annotations may come in any order, not grouped by image.
Items then come in file-name order (ties: file order), each with its annotations in file order, as
reading the whole file would give. Memory stays bounded by one entry, SQLite's page cache, the
categories and the slice positions of the images (for neighbouring-slice names). A file whose
top-level value is not an object, or that has no categories, is not a COCO instances file; a missing
``images`` or ``annotations`` list reads as empty.

``meta.json`` beside the JSON gives ``modality`` (else ``--modality``), ``body_region``, ``plane``,
``display``, ``cases``, ``case_namespace`` and ``protocols``, as for the medseg layout. The patient key is
an image's ``patient_id`` (or ``case``) field, else the slice suffix of its file name
(``BraTS2021_01646_z042.png``), else unknown. The file is one labelling protocol (COCO annotates each
category exhaustively), unless meta.json maps file-name prefixes to protocols; a protocol labels the
categories annotated at least once in its images (exported files often list placeholder categories
nobody annotated), or meta.json's ``labelled`` list. A category annotated in an image without a usable
mask (box-only, undecodable) is never called absent from that image.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import ijson
import numpy as np

from medground.data.sources.base import (
    Item,
    LoadResult,
    Source,
    SourceError,
    case_key,
    clean_region,
    labelled,
    nearby_names,
    plane_from_text,
    protocol_of,
    read_meta,
    read_protocols,
    slice_positions,
)
from medground.data.sources.peek import json_first_entry
from medground.data.sources.planar import MaskSpec, load_planar
from medground.io import decode_rle, fill_polygon
from medground.types import Rejected

__all__ = ["CocoSource", "decode_segmentation"]

_TOP_LEVEL = ("info", "licenses", "images", "annotations", "categories", "type")
_CACHE_KIB = 65536  # SQLite page cache of the annotation database (KiB); the rest of it stays on disk
_BATCH = 500  # rows per insert batch


def _batched(rows: Iterable[tuple], size: int = _BATCH) -> Iterator[list[tuple]]:
    """Lists of ``size`` rows (the last one shorter), for ``executemany`` without holding every row."""
    iterator = iter(rows)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _key(ident: Any) -> str:
    """An image id as the database's key: its JSON text, with 3.0 read as 3 (equal ids, equal keys)."""
    return json.dumps(int(ident) if isinstance(ident, float) and ident.is_integer() else ident)


def _image_problem(image: Any) -> str | None:
    """Why an ``images`` entry cannot be used, or None."""
    if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
        return "image entry needs an id and a file_name"
    if not (_positive_int(image.get("width")) and _positive_int(image.get("height"))):
        return "image entry needs positive integer width and height"
    return None


def _polygons_mask(polygons: list, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    for polygon in polygons:
        if not isinstance(polygon, list) or any(
            isinstance(v, bool) or not isinstance(v, int | float) for v in polygon
        ):
            raise ValueError("a polygon must be a list of numbers [x0, y0, x1, y1, ...]")
        if len(polygon) % 2 or len(polygon) < 6:
            raise ValueError(f"a polygon needs an even count of at least 6 numbers, got {len(polygon)}")
        xy = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        mask |= fill_polygon((height, width), xy[:, ::-1] - 0.5)  # (row, column); pixel centres at +0.5
    return mask


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """(height, width) uint8 0/1 mask of one COCO segmentation (polygons or RLE); ValueError says why not."""
    if isinstance(segmentation, list):
        if not segmentation:
            raise ValueError("empty segmentation (no polygon)")
        return _polygons_mask(segmentation, height, width).astype(np.uint8)
    if not isinstance(segmentation, dict) or "counts" not in segmentation or "size" not in segmentation:
        raise ValueError("segmentation is neither a list of polygons nor an RLE {'size', 'counts'}")
    size = segmentation["size"]
    if not (isinstance(size, list) and len(size) == 2 and [int(v) for v in size] == [height, width]):
        raise ValueError(f"RLE size {size} is not the image's [height, width] = [{height}, {width}]")
    return np.ascontiguousarray(
        decode_rle({"size": [height, width], "counts": segmentation["counts"]}), np.uint8
    )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass
class CocoSource(Source):
    """One COCO instances JSON and the images it names."""

    path: Path
    name: str = ""
    modality: str | None = None
    kind: str = "coco"
    planning_only: tuple[str, ...] = ("_db",)
    layout: ClassVar[str] = (
        "a COCO instances JSON (images, categories, annotations with polygon or RLE segmentations; "
        "iscrowd read as a semantic mask); images beside it or in images/, meta.json beside it"
    )

    @classmethod
    def detect(cls, path: Path) -> bool:
        """A .json file whose first key is one of COCO's top-level keys (info, images, annotations ...)."""
        entry = json_first_entry(path)
        return entry is not None and entry[0] in _TOP_LEVEL

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.path.is_file():
            raise SourceError(f"{self.path}: no such file (the coco kind reads an instances JSON)")
        self.base = self.path.parent
        with open(self.path, "rb") as handle:
            if not handle.read(4096).lstrip().startswith(b"{"):
                raise SourceError(f"{self.path}: not a COCO instances file; it must be one JSON object")
        meta = read_meta(self.base)
        self.name = self.name or meta.get("name") or self.path.stem
        self.read_case_policy(meta, self.base / "meta.json")
        stated = meta.get("modality")
        self.modality = self.modality_of(stated, self.modality, str(self.base / "meta.json"))
        if not self.modality:
            raise SourceError(
                f"{self.path}: no modality; add meta.json with 'modality' beside it or pass --modality"
            )
        self.body_region = clean_region(meta.get("body_region"))
        self.plane = meta.get("plane") or plane_from_text(meta.get("body_region"))
        self.display = meta.get("display")
        self.prefixes = read_protocols(meta, self.base / "meta.json")
        self.labelled_categories = meta.get("labelled")
        if self.labelled_categories is not None and (
            not isinstance(self.labelled_categories, list)
            or not all(isinstance(n, str) and n for n in self.labelled_categories)
        ):
            raise SourceError(
                f'{self.base / "meta.json"}: "labelled" must list the category names the file labels '
                f'exhaustively, e.g. ["polyp"]; got {self.labelled_categories!r}'
            )
        self.categories: dict[Any, str] = {}
        for category in self._stream("categories.item"):
            if (
                not isinstance(category, dict)
                or "id" not in category
                or not str(category.get("name", "")).strip()
            ):
                raise SourceError(f"{self.path}: category {category!r} needs an id and a name")
            if category["id"] in self.categories:
                raise SourceError(f"{self.path}: category id {category['id']!r} appears twice")
            self.categories[category["id"]] = str(category["name"]).strip()
        if not self.categories:
            raise SourceError(
                f"{self.path}: not a COCO instances file; it needs the lists images, annotations and "
                "categories, and has no categories"
            )
        self._db = self._index()

    def _stream(self, prefix: str) -> Iterator[Any]:
        """The values at ``prefix`` (``"images.item"``: each entry of the top-level ``images`` list),
        streamed by ijson: one pass over the file, one value in memory at a time."""
        with open(self.path, "rb") as handle:
            try:
                yield from ijson.items(handle, prefix, use_float=True)
            except (ijson.JSONError, UnicodeDecodeError) as error:
                raise SourceError(f"{self.path}: not valid JSON ({error})") from error

    def _index(self) -> sqlite3.Connection:
        """Stream the file's images and annotations into a private on-disk database (deleted when closed):
        ``images`` (usable entries, keyed by their id as JSON), ``annotations`` (usable ones, with their
        image key and file position; a COCO file may list them in any order, so grouping by image needs
        the index) and ``rejected`` (what was refused and why, in the order found: images, then
        annotations). Memory: one entry at a time plus SQLite's page cache."""
        db = sqlite3.connect("")  # "": a temporary database on disk, removed when the connection closes
        db.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("CREATE TABLE images (key TEXT PRIMARY KEY, file_name TEXT, seq INTEGER, entry TEXT)")
        db.execute("CREATE TABLE annotations (image TEXT, seq INTEGER, category TEXT, entry TEXT)")
        db.execute("CREATE TABLE rejected (seq INTEGER PRIMARY KEY, input TEXT, reason TEXT)")
        for seq, image in enumerate(self._stream("images.item")):
            reason = _image_problem(image)
            if reason is None:
                key = _key(image["id"])
                row = (key, image["file_name"], seq, json.dumps(image))
                if db.execute("INSERT OR IGNORE INTO images VALUES (?, ?, ?, ?)", row).rowcount:
                    continue
                reason = f"image id {image['id']!r} appears twice"
            ident = image.get("id", "?") if isinstance(image, dict) else "?"
            db.execute(
                "INSERT INTO rejected (input, reason) VALUES (?, ?)", (self._where("image", ident), reason)
            )
        for batch in _batched(self._annotation_rows(db)):
            db.executemany("INSERT INTO annotations VALUES (?, ?, ?, ?)", batch)
        db.execute("CREATE INDEX by_image ON annotations (image, seq)")
        db.commit()
        return db

    def _annotation_rows(self, db: sqlite3.Connection) -> Iterator[tuple]:
        """(image key, position, category name, annotation JSON or None for a box-only one) of each
        annotation of a known image and category; the others go to ``rejected`` with the reason."""
        for seq, annotation in enumerate(self._stream("annotations.item")):
            ident = annotation.get("id", "?") if isinstance(annotation, dict) else "?"
            key = _key(annotation.get("image_id")) if isinstance(annotation, dict) else None
            if not isinstance(annotation, dict):
                reason = "annotation is not a JSON object"
            elif db.execute("SELECT 1 FROM images WHERE key = ?", (key,)).fetchone() is None:
                reason = f"image_id {annotation.get('image_id')!r} is not among the images"
            elif annotation.get("category_id") not in self.categories:
                reason = f"category_id {annotation.get('category_id')!r} is not among the categories"
            else:
                category = self.categories[annotation["category_id"]]
                segmentation = annotation.get("segmentation")
                entry = [ident, category, segmentation, bool(annotation.get("iscrowd"))]
                yield key, seq, category, json.dumps(entry) if segmentation else None
                if segmentation:
                    continue
                reason = "no segmentation (a box-only annotation has no mask to use)"
            where = self._where("annotation", ident)
            db.execute("INSERT INTO rejected (input, reason) VALUES (?, ?)", (where, reason))

    def _where(self, what: str, ident: Any) -> str:
        return f"{self.path}#{what} {ident}"

    def _image_path(self, file_name: str) -> Path | None:
        candidates = [self.base / file_name, self.base / "images" / file_name]
        return next((c for c in candidates if c.is_file()), None)

    def _planned(self) -> Iterator[tuple[dict, list[list], list[str]]]:
        """(image entry, its usable annotations ``[id, category, segmentation, crowd]`` in file order, the
        categories annotated there without a mask: box-only), in file-name order (ties: file order)."""
        rows = self._db.execute("SELECT key, entry FROM images ORDER BY file_name, seq")
        for key, entry in rows:
            found = self._db.execute(
                "SELECT entry, category FROM annotations WHERE image = ? ORDER BY seq", (key,)
            ).fetchall()
            usable = [json.loads(a) for a, _ in found if a is not None]
            yield json.loads(entry), usable, sorted({c for a, c in found if a is None})

    def items(self) -> Iterator[Item | Rejected]:
        for where, reason in self._db.execute("SELECT input, reason FROM rejected ORDER BY seq"):
            yield Rejected(where, reason, self.name)
        positions = slice_positions((Path(image["file_name"]) for image, _, _ in self._planned()), depth=1)
        neighbours: dict[str, list[tuple[int, frozenset[str]]]] = {}
        for image, found, _ in self._planned():
            position = positions.get(Path(image["file_name"]))
            if position is not None:
                names = frozenset(category for _, category, _, _ in found)
                neighbours.setdefault(position[0], []).append((position[1], names))
        keys: set[str] = set()
        for image, found, boxed in self._planned():
            file_name = image["file_name"]
            where = self._where("image", image["id"])
            path = self._image_path(file_name)
            key = "__".join(Path(file_name).with_suffix("").parts)
            if path is None:
                reason = f"image file {file_name!r} not found in {self.base} or {self.base / 'images'}"
                yield Rejected(where, reason, self.name)
                continue
            if not found:
                yield Rejected(str(path), "no usable annotation for this image", self.name)
                continue
            if key in keys:
                yield Rejected(where, f"another image has the same name without suffix ({key!r})", self.name)
                continue
            keys.add(key)
            stem = Path(file_name).stem
            stated = image.get("patient_id", image.get("case"))
            payload = {
                "image": str(path),
                "height": image["height"],
                "width": image["width"],
                "annotations": [tuple(a) for a in found],
                "protocol": protocol_of(stem, self.prefixes, False, self.name),
                "nearby": nearby_names(positions.get(Path(file_name)), neighbours),
                "unsure": boxed,
            }
            yield Item(
                self.name,
                key,
                self.patient(case_key(stem), key, "" if stated is None else str(stated)),
                payload,
            )

    def load(self, item: Item) -> Iterator[LoadResult]:
        height, width = item.payload["height"], item.payload["width"]
        specs: list[MaskSpec] = []
        unsure = set(item.payload.get("unsure", ()))
        for ident, category, segmentation, crowd in item.payload["annotations"]:
            where = self._where("annotation", ident)
            try:
                mask = decode_segmentation(segmentation, height, width)
            except (ValueError, TypeError) as error:
                unsure.add(category)
                yield Rejected(where, f"segmentation unusable: {error}", self.name)
                continue
            specs.append(MaskSpec(where, category, instance_map=not crowd, decoded=mask))
        if not specs:
            yield Rejected(item.payload["image"], "no usable annotation for this image", self.name)
            return
        planar = load_planar(
            item,
            item.payload["image"],
            specs,
            modality=self.modality,
            plane=self.plane,
            body_region=self.body_region,
            display=self.display,
        )
        yield from labelled(planar, {**item.payload, "unsure": sorted(unsure)})

    def protocols(self) -> dict[str, list[str]]:
        """Protocol -> the categories it labels: those with at least one annotation in the file (a listed
        category nobody annotated, a placeholder such as "teeth" in exported files, is not known to be
        labelled), or meta.json's ``"labelled"`` list of category names where given."""
        found: dict[str, set[str]] = {}
        rows = self._db.execute(
            "SELECT DISTINCT i.file_name, a.category FROM annotations a JOIN images i ON i.key = a.image"
        )
        for file_name, category in rows:
            protocol = protocol_of(Path(file_name).stem, self.prefixes, False, self.name)
            if protocol:
                found.setdefault(protocol, set()).add(category)
        if self.labelled_categories is not None:
            found = {protocol: set(self.labelled_categories) for protocol in found}
        return {protocol: sorted(names) for protocol, names in sorted(found.items())}
