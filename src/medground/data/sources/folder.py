"""A plain ``images/`` folder and ``masks/`` folder matched by a file-name pattern.

For each image ``<stem>.<ext>``, the masks are the files of the masks folder that match
``mask_pattern`` with ``{stem}`` filled in (default ``{stem}*``: ``IMD002_lesion.png`` belongs to
``IMD002.bmp``). A mask named ``<stem>_<name>`` is structure ``<name>``; a mask named like its image
takes ``--structure`` or, with a ``labels.json`` beside the folders, is read as a label map.
A ``meta.json`` beside the folders may give ``modality`` (``--modality`` fills in only where it gives
none), ``body_region``, ``plane``, ``display``, ``cases`` / ``case_namespace`` (patient keys) and
``protocols`` (file-name prefix -> labelling protocol; else the folder is one protocol). The patient
key is the image name's slice suffix (``case1_z012``), else unknown unless meta.json says otherwise.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from medground.data.sources.base import (
    Item,
    SourceError,
    case_key,
    clean_region,
    nearby_names,
    plane_from_text,
    protocol_of,
    read_meta,
    read_protocols,
    slice_positions,
)
from medground.data.sources.planar import MaskSpec, PlanarSource
from medground.io import IMAGE_SUFFIXES
from medground.types import Rejected

__all__ = ["FolderSource"]


@dataclass
class FolderSource(PlanarSource):
    """Images and masks in two folders, paired by name."""

    root: Path
    name: str = ""
    modality: str | None = None
    mask_pattern: str = "{stem}*"
    structure: str | None = None
    images_dir: str = "images"
    masks_dir: str = "masks"
    kind: str = "folder"
    layout: ClassVar[str] = (
        'images/ + masks/ paired by --mask-pattern "{stem}*"; the structure is the mask name\'s suffix '
        "(IMD002_lesion.png) or --structure"
    )

    @classmethod
    def detect(cls, path: Path) -> bool:
        """A folder with images/ and masks/ sub-folders."""
        return (path / "images").is_dir() and (path / "masks").is_dir()

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.name = self.name or self.root.name
        for folder in (self.images_dir, self.masks_dir):
            if not (self.root / folder).is_dir():
                raise SourceError(
                    f"{self.root}: no {folder}/ folder (the folder layout needs images/ and masks/)"
                )
        if "{stem}" not in self.mask_pattern:
            raise SourceError(f"mask pattern {self.mask_pattern!r} must contain {{stem}}")
        meta = read_meta(self.root)
        self.modality = self.modality_of(meta.get("modality"), self.modality, "meta.json")
        if not self.modality:
            raise SourceError(f"{self.root}: no modality; add meta.json with 'modality' or pass --modality")
        self.read_case_policy(meta, self.root / "meta.json")
        self.prefixes = read_protocols(meta, self.root / "meta.json")
        self.body_region = clean_region(meta.get("body_region"))
        self.display = meta.get("display")
        self.plane = meta.get("plane") or plane_from_text(self.body_region)
        labels_path = self.root / "labels.json"
        labels = json.loads(labels_path.read_text(encoding="utf-8")) if labels_path.exists() else {}
        self.declared = {int(k): str(v) for k, v in labels.items() if str(k).isdigit() and int(k) != 0}

    def _spec(self, mask: Path, stem: str) -> MaskSpec:
        rest = mask.stem[len(stem) :].lstrip("_-. ") if mask.stem.startswith(stem) else ""
        if rest:
            return MaskSpec(str(mask), rest)
        if self.structure:
            return MaskSpec(str(mask), self.structure)
        if self.declared:
            return MaskSpec(str(mask), "", tuple(sorted(self.declared.items())))
        return MaskSpec(str(mask), "structure")

    def _owner(self, mask_stem: str, stems: set[str]) -> str | None:
        """The longest image stem that the mask's stem equals or starts with before a separator."""
        cuts = [i for i, ch in enumerate(mask_stem) if ch in "_-. "] + [len(mask_stem)]
        return next((mask_stem[:i] for i in reversed(cuts) if mask_stem[:i] in stems), None)

    def items(self) -> Iterator[Item | Rejected]:
        images = sorted(
            p for p in (self.root / self.images_dir).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
        )
        stems = {p.stem for p in images}
        owned: dict[str, list[Path]] = {}
        for mask in sorted(p for p in (self.root / self.masks_dir).rglob("*") if p.is_file()):
            owner = self._owner(mask.stem, stems)
            if owner is not None and fnmatch.fnmatch(mask.name, self.mask_pattern.format(stem=owner)):
                owned.setdefault(owner, []).append(mask)
        image_root = self.root / self.images_dir
        relative = {image.stem: image.relative_to(image_root) for image in images}
        positions = slice_positions(relative.values(), depth=1)
        neighbours: dict[str, list[tuple[int, frozenset[str]]]] = {}
        for stem, masks in owned.items():
            position = positions.get(relative[stem])
            if position is not None:
                names = {self._spec(m, stem).name for m in masks}
                if "" in names:  # a label map: any declared label may be there
                    names |= set(self.declared.values())
                neighbours.setdefault(position[0], []).append((position[1], frozenset(names - {""})))
        for image in images:
            masks = owned.get(image.stem, [])
            if not masks:
                pattern = self.mask_pattern.format(stem=image.stem)
                yield Rejected(
                    str(image), f"no mask matches {pattern!r} in {self.root / self.masks_dir}", self.name
                )
                continue
            payload = {
                "image": str(image),
                "masks": [self._spec(m, image.stem) for m in masks],
                "protocol": protocol_of(image.stem, self.prefixes, False, self.name),
                "nearby": nearby_names(positions.get(relative[image.stem]), neighbours),
            }
            yield Item(self.name, image.stem, self.patient(case_key(image.stem), image.stem), payload)

    def protocols(self) -> dict[str, list[str]]:
        found: dict[str, set[str]] = {}
        for item in self.items():
            if isinstance(item, Item) and item.payload["protocol"] is not None:
                names = {spec.name for spec in item.payload["masks"]}
                if "" in names:
                    names |= set(self.declared.values())
                found.setdefault(item.payload["protocol"], set()).update(names - {""})
        return {p: sorted(names) for p, names in sorted(found.items())}
