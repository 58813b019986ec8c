"""SA-Med2D-20M JSON indexes: ``image2label_train.json`` ({image: [masks]}) and
``label2image_test.json`` ({mask: image}).

Paths in the index are relative to the folder that holds the dataset's top folder (``data_demo/...``);
they are resolved against the index's folder, then its parent, then with the first component
dropped. Mask file names are ``<image stem>_<structure>_<instance>.png``. The modality comes from the
file-name prefix (``ct_00--AbdomenCT1K--Case_00220--x_0359.png`` -> ct); names without a modality
prefix (the demo's ``amos_0004_75``) take the folder's ``meta.json`` modality, else ``--modality``.

SA-Med2D-20M mixes 31 sub-datasets with different label sets, so each image's labelling protocol is
the sub-dataset its name carries (``AbdomenCT1K``): only structures that sub-dataset labels may be
called absent. The patient is "<dataset>--<case>" without the modality prefix (the sequences of one
subject are one patient). Slices of one case (``--x_0359``) know which structures their neighbours
within a few slices label. Names without the convention take the ``protocols`` prefix map of the
folder's ``meta.json``, else their protocol is unknown (distant-anatomy negatives only).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from medground.data.modalities import modality_from_sa_med2d_name, plane_from_sa_med2d_name
from medground.data.sources.base import (
    Item,
    SourceError,
    case_key,
    nearby_names,
    protocol_of,
    read_protocols,
    slice_position,
)
from medground.data.sources.medseg import clean_region, read_meta
from medground.data.sources.peek import json_first_entry
from medground.data.sources.planar import MaskSpec, PlanarSource
from medground.io import IMAGE_SUFFIXES
from medground.types import Rejected

__all__ = ["SaMed2dSource", "INDEX_NAMES"]

INDEX_NAMES = ("image2label_train.json", "label2image_test.json")
_INSTANCE = re.compile(r"^(?P<name>.+?)_(?P<instance>\d{3})$")


def _structure(mask_stem: str, image_stem: str) -> tuple[str, int | None]:
    rest = mask_stem[len(image_stem) + 1 :] if mask_stem.startswith(image_stem + "_") else mask_stem
    match = _INSTANCE.match(rest)
    return (match["name"], int(match["instance"])) if match else (rest, None)


@dataclass
class SaMed2dSource(PlanarSource):
    """One or both SA-Med2D-20M index files (a folder holding them, or a file)."""

    path: Path
    name: str = ""
    modality: str | None = None
    kind: str = "sa-med2d"
    planning_only: tuple[str, ...] = ("index",)
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
        self.index: dict[str, list[str]] = {}
        for file in files:
            data = json.loads(file.read_text(encoding="utf-8"))
            if file.name.startswith("label2image"):
                for mask, image in data.items():
                    self.index.setdefault(image, []).append(mask)
            else:
                for image, masks in data.items():
                    self.index.setdefault(image, []).extend(masks)

    def _resolve(self, relative: str) -> Path:
        candidates = [
            self.base / relative,
            self.base.parent / relative,
            self.base / Path(*Path(relative).parts[1:]),
        ]
        return next((c for c in candidates if c.exists()), candidates[-1])

    def _structures_of(self, image: str) -> frozenset[str]:
        stem = Path(image).stem
        return frozenset(_structure(Path(m).stem, stem)[0] for m in self.index[image])

    def items(self) -> Iterator[Item | Rejected]:
        neighbours: dict[str, list[tuple[int, frozenset[str]]]] = {}
        for image in self.index:
            position = slice_position(Path(image).stem)
            if position is not None:
                neighbours.setdefault(position[0], []).append((position[1], self._structures_of(image)))
        for image in sorted(self.index):
            stem = Path(image).stem
            named = modality_from_sa_med2d_name(Path(image).name)
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
            for mask in sorted(set(self.index[image])):
                structure, instance = _structure(Path(mask).stem, stem)
                specs.append(MaskSpec(str(self._resolve(mask)), structure, instance=instance))
            payload = {
                "image": str(self._resolve(image)),
                "masks": specs,
                "modality": modality,
                "plane": plane_from_sa_med2d_name(Path(image).name),
                "protocol": protocol_of(stem, self.prefixes, True, None),
                "nearby": nearby_names(slice_position(stem), neighbours),
            }
            yield Item(self.name, stem, self.patient(case_key(stem), stem), payload)

    def protocols(self) -> dict[str, list[str]]:
        found: dict[str, set[str]] = {}
        for image in self.index:
            protocol = protocol_of(Path(image).stem, self.prefixes, True, None)
            if protocol is not None:
                found.setdefault(protocol, set()).update(self._structures_of(image))
        return {p: sorted(names) for p, names in sorted(found.items())}

    def vocabulary(self) -> list[str]:
        """Every structure of the index, whatever its protocol (also images whose protocol is unknown)."""
        return sorted({name for image in self.index for name in self._structures_of(image)})
