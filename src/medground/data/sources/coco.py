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

``meta.json`` beside the JSON gives ``modality`` (else ``--modality``), ``body_region``, ``plane``,
``display``, ``cases``, ``case_namespace`` and ``protocols``, as for the medseg layout. The patient key is
an image's ``patient_id`` (or ``case``) field, else the slice suffix of its file name
(``BraTS2021_01646_z042.png``), else unknown. All categories of the file are one labelling protocol
(COCO annotates each category exhaustively), unless meta.json maps file-name prefixes to protocols.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medground.data.sources.base import (
    Item,
    LoadResult,
    Source,
    SourceError,
    case_key,
    labelled,
    nearby_names,
    protocol_of,
    read_protocols,
    slice_position,
)
from medground.data.sources.medseg import clean_region, plane_from_text, read_meta
from medground.data.sources.peek import json_first_entry
from medground.data.sources.planar import MaskSpec, load_planar
from medground.io import decode_rle, fill_polygon
from medground.types import Rejected

__all__ = ["CocoSource", "decode_segmentation"]

_TOP_LEVEL = ("info", "licenses", "images", "annotations", "categories", "type")


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
    return decode_rle({"size": [height, width], "counts": segmentation["counts"]}).astype(np.uint8)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass
class CocoSource(Source):
    """One COCO instances JSON and the images it names."""

    path: Path
    name: str = ""
    modality: str | None = None
    kind: str = "coco"
    planning_only: tuple[str, ...] = ("data",)
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
        try:
            self.data = json.loads(self.path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise SourceError(f"{self.path}: not valid JSON ({error})") from error
        missing = [
            k for k in ("images", "annotations", "categories") if not isinstance(self.data.get(k), list)
        ]
        if not isinstance(self.data, dict) or missing:
            raise SourceError(f"{self.path}: not a COCO instances file; it needs the lists {missing}")
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
        self.categories: dict[Any, str] = {}
        for category in self.data["categories"]:
            if (
                not isinstance(category, dict)
                or "id" not in category
                or not str(category.get("name", "")).strip()
            ):
                raise SourceError(f"{self.path}: category {category!r} needs an id and a name")
            if category["id"] in self.categories:
                raise SourceError(f"{self.path}: category id {category['id']!r} appears twice")
            self.categories[category["id"]] = str(category["name"]).strip()

    def _where(self, what: str, ident: Any) -> str:
        return f"{self.path}#{what} {ident}"

    def _image_path(self, file_name: str) -> Path | None:
        candidates = [self.base / file_name, self.base / "images" / file_name]
        return next((c for c in candidates if c.is_file()), None)

    def _annotations(self, images: dict[Any, dict]) -> Iterator[tuple[Any, dict] | Rejected]:
        """(image id, annotation) for each annotation whose fields can be used; Rejected for the others."""
        for annotation in self.data["annotations"]:
            ident = annotation.get("id", "?") if isinstance(annotation, dict) else "?"
            where = self._where("annotation", ident)
            if not isinstance(annotation, dict):
                yield Rejected(where, "annotation is not a JSON object", self.name)
            elif annotation.get("image_id") not in images:
                yield Rejected(
                    where, f"image_id {annotation.get('image_id')!r} is not among the images", self.name
                )
            elif annotation.get("category_id") not in self.categories:
                yield Rejected(
                    where,
                    f"category_id {annotation.get('category_id')!r} is not among the categories",
                    self.name,
                )
            elif not annotation.get("segmentation"):
                yield Rejected(where, "no segmentation (a box-only annotation has no mask to use)", self.name)
            else:
                yield annotation["image_id"], annotation

    def _usable_images(self) -> Iterator[tuple[Any, dict] | Rejected]:
        seen: set[Any] = set()
        for image in self.data["images"]:
            ident = image.get("id", "?") if isinstance(image, dict) else "?"
            where = self._where("image", ident)
            if (
                not isinstance(image, dict)
                or "id" not in image
                or not isinstance(image.get("file_name"), str)
            ):
                yield Rejected(where, "image entry needs an id and a file_name", self.name)
            elif not (_positive_int(image.get("width")) and _positive_int(image.get("height"))):
                yield Rejected(where, "image entry needs positive integer width and height", self.name)
            elif image["id"] in seen:
                yield Rejected(where, f"image id {image['id']!r} appears twice", self.name)
            else:
                seen.add(image["id"])
                yield image["id"], image

    def _plan(self) -> tuple[list[tuple[dict, list[dict]]], list[Rejected]]:
        """(image entry, its annotations) in file-name order, and the rejections found on the way."""
        rejected: list[Rejected] = []
        images: dict[Any, dict] = {}
        for entry in self._usable_images():
            if isinstance(entry, Rejected):
                rejected.append(entry)
            else:
                images[entry[0]] = entry[1]
        grouped: dict[Any, list[dict]] = {ident: [] for ident in images}
        for entry in self._annotations(images):
            if isinstance(entry, Rejected):
                rejected.append(entry)
            else:
                grouped[entry[0]].append(entry[1])
        planned = [(images[i], grouped[i]) for i in sorted(images, key=lambda i: images[i]["file_name"])]
        return planned, rejected

    def items(self) -> Iterator[Item | Rejected]:
        planned, rejected = self._plan()
        yield from rejected
        neighbours: dict[str, list[tuple[int, frozenset[str]]]] = {}
        for image, found in planned:
            position = slice_position(Path(image["file_name"]).stem)
            if position is not None:
                names = frozenset(self.categories[a["category_id"]] for a in found)
                neighbours.setdefault(position[0], []).append((position[1], names))
        keys: set[str] = set()
        for image, found in planned:
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
                "annotations": [
                    (
                        a.get("id", "?"),
                        self.categories[a["category_id"]],
                        a["segmentation"],
                        bool(a.get("iscrowd")),
                    )
                    for a in found
                ],
                "protocol": protocol_of(stem, self.prefixes, False, self.name),
                "nearby": nearby_names(slice_position(stem), neighbours),
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
        for ident, category, segmentation, crowd in item.payload["annotations"]:
            where = self._where("annotation", ident)
            try:
                mask = decode_segmentation(segmentation, height, width)
            except (ValueError, TypeError) as error:
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
        yield from labelled(planar, item.payload)

    def protocols(self) -> dict[str, list[str]]:
        if self.prefixes is None:
            return {self.name: sorted(set(self.categories.values()))}
        found: dict[str, set[str]] = {}
        images = {i["id"]: i for i in self.data["images"] if isinstance(i, dict) and "id" in i}
        for annotation in self.data["annotations"]:
            image = images.get(annotation.get("image_id")) if isinstance(annotation, dict) else None
            category = self.categories.get(annotation.get("category_id")) if image else None
            protocol = (
                protocol_of(Path(str(image.get("file_name"))).stem, self.prefixes, False, None)
                if image
                else None
            )
            if category and protocol:
                found.setdefault(protocol, set()).add(category)
        return {protocol: sorted(names) for protocol, names in sorted(found.items())}
