"""The medseg folder layout: ``images/``, ``masks/``, ``pairs.csv``, ``labels.json``, ``meta.json``.

``pairs.csv`` has one row per (image, mask) with at least the columns ``image`` and ``mask`` (paths
relative to the dataset folder); optional columns: ``structure`` (the raw structure key; empty for a
label map), ``instance`` (the dataset's own instance index), ``case`` (the patient key; else the
image name's slice suffix or SA-Med2D case, see :func:`case_key`), ``mask_values``. ``labels.json``
maps stored mask values to names; a key ``"1..N"`` marks 16-bit instance maps. ``meta.json`` gives
``modality`` and optionally ``body_region``, ``plane``, ``display``, ``cases`` / ``case_namespace``
(patient keys, see :mod:`.base`) and ``protocols`` (file-name prefix -> labelling protocol). The
dataset is one labelling protocol unless ``protocols`` says otherwise or the folder is an SA-Med2D-20M
collection (it holds an SA-Med2D index): then each image's protocol is the sub-dataset its name
carries, and images whose names do not tell get only distant-anatomy negatives. A row whose
``image`` is a NIfTI volume is served by the NIfTI source.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from medground.data.sources.base import (
    SIZE_SAMPLES,
    Item,
    SourceError,
    case_key,
    clean_region,
    large_structures,
    nearby_names,
    plane_from_text,
    protocol_of,
    read_meta,
    read_protocols,
    resolve,
    slice_positions,
)
from medground.data.sources.peek import csv_header
from medground.data.sources.planar import MaskSpec, PlanarSource
from medground.types import Rejected

__all__ = ["MedsegSource"]

SA_MED2D_INDEX_NAMES = ("image2label_train.json", "label2image_test.json")
_INSTANCE_KEY = re.compile(r"^\d+\s*\.\.\s*N$", re.IGNORECASE)


def _declared_values(labels: dict) -> dict[int, str]:
    return {int(k): str(v) for k, v in labels.items() if k.strip().isdigit() and int(k) != 0}


@dataclass
class MedsegSource(PlanarSource):
    """A dataset folder in the medseg layout."""

    root: Path
    name: str = ""
    modality: str | None = None
    kind: str = "medseg"
    planning_only: tuple[str, ...] = ("rows", "_grouped")
    layout: ClassVar[str] = (
        "images/, masks/, pairs.csv (image,mask[,structure,instance,case]), labels.json "
        '(mask value -> name; "1..N" marks instance maps), meta.json (modality, body_region, plane)'
    )

    @classmethod
    def detect(cls, path: Path) -> bool:
        """A folder with a pairs.csv that is not a table of volumes (those are the nifti kind's)."""
        header = csv_header(path / "pairs.csv")
        return bool(header) and not ("label" in header and "mask" not in header)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not (self.root / "pairs.csv").exists():
            raise SourceError(f"{self.root}: no pairs.csv; the medseg layout needs one row per (image, mask)")
        self.name = self.name or self.root.name
        meta = read_meta(self.root)
        self.modality = self.modality_of(meta.get("modality"), self.modality, "meta.json")
        if not self.modality:
            raise SourceError(f"{self.root}: no modality; add it to meta.json or pass --modality")
        self.read_case_policy(meta, self.root / "meta.json")
        self.prefixes = read_protocols(meta, self.root / "meta.json")
        self.sa_med2d = any((self.root / n).exists() for n in SA_MED2D_INDEX_NAMES)
        self.plane = meta.get("plane") or plane_from_text(meta.get("body_region"))
        self.body_region = clean_region(meta.get("body_region"))
        self.display = meta.get("display")
        labels_path = self.root / "labels.json"
        self.labels = json.loads(labels_path.read_text(encoding="utf-8")) if labels_path.exists() else {}
        with open(self.root / "pairs.csv", newline="", encoding="utf-8") as handle:
            self.rows = list(csv.DictReader(handle))
        missing = {"image", "mask"} - set(self.rows[0] if self.rows else {})
        if missing:
            raise SourceError(f"{self.root / 'pairs.csv'}: missing columns {sorted(missing)}")

    def _spec(self, row: dict) -> MaskSpec:
        path = str(resolve(self.root, row["mask"]))
        structure = (row.get("structure") or "").strip()
        instance_map = any(_INSTANCE_KEY.match(k) for k in self.labels) or "instance" in (
            row.get("mask_values") or ""
        )
        instance = int(row["instance"]) if (row.get("instance") or "").strip().isdigit() else None
        declared = _declared_values(self.labels)
        if instance_map:
            return MaskSpec(path, structure or "instance", instance_map=True)
        if len(declared) > 1:  # a multi-class label map: each value its own structure, named by labels.json
            return MaskSpec(path, "", tuple(sorted(declared.items())), instance=instance)
        if structure:
            values = tuple((v, structure) for v in sorted(declared)) if declared else None
            return MaskSpec(path, structure, values, instance=instance)
        return MaskSpec(path, "", tuple(sorted(declared.items())), instance=instance)

    def _names(self, rows: list[dict]) -> frozenset[str]:
        """Raw keys an image's rows may label: structure columns, or every declared label of a label map."""
        declared = set(_declared_values(self.labels).values())
        if len(declared) > 1:  # a multi-class label map: the structure column only summarises it
            return frozenset(declared)
        names = {(r.get("structure") or "").strip() for r in rows}
        if "" in names:
            names |= declared
        return frozenset(n for n in names if n)

    def _protocol(self, relative: Path) -> str | None:
        return protocol_of(relative.stem, self.prefixes, self.sa_med2d, self.name)

    def _images(self) -> tuple[dict[str, list[dict]], list[Rejected]]:
        """Rows grouped by image (index order kept within an image), and rows without paths."""
        if "_grouped" not in self.__dict__:
            grouped: dict[str, list[dict]] = {}
            bad = []
            for line, row in enumerate(self.rows, start=2):
                if not (row.get("image") or "").strip() or not (row.get("mask") or "").strip():
                    bad.append(
                        Rejected(
                            f"{self.root / 'pairs.csv'}:{line}", "row without image or mask path", self.name
                        )
                    )
                    continue
                grouped.setdefault(row["image"], []).append(row)
            self.__dict__["_grouped"] = (grouped, bad)
        return self.__dict__["_grouped"]

    def items(self) -> Iterator[Item | Rejected]:
        grouped, bad = self._images()
        yield from bad
        positions = slice_positions([Path(image) for image in grouped], depth=2)
        neighbours: dict[str, list[tuple[int, frozenset[str]]]] = {}
        for image, rows in grouped.items():
            position = positions.get(Path(image))
            if position is not None:
                neighbours.setdefault(position[0], []).append((position[1], self._names(rows)))
        for image in sorted(grouped):
            rows = grouped[image]
            relative = Path(image)
            parts = relative.with_suffix("").parts
            key = "__".join(parts[1:] if parts[0] == "images" and len(parts) > 1 else parts)
            case = self.patient(case_key(relative.stem), key, (rows[0].get("case") or "").strip())
            payload = {
                "image": str(resolve(self.root, image)),
                "masks": [self._spec(r) for r in rows],
                "protocol": self._protocol(relative),
                "nearby": nearby_names(positions.get(relative), neighbours),
            }
            yield Item(self.name, key, case, payload)

    def protocols(self) -> dict[str, list[str]]:
        """Protocol -> its structures; in an SA-Med2D-20M folder only those large enough to have survived
        its small-mask filter (:func:`large_structures`)."""
        found: dict[str, set[str]] = {}
        sizes: dict[tuple[str, str], list[str]] = {}
        for image, rows in sorted(self._images()[0].items()):
            protocol = self._protocol(Path(image))
            if protocol is not None:
                found.setdefault(protocol, set()).update(self._names(rows))
                for row in rows:
                    sample = sizes.setdefault((protocol, (row.get("structure") or "").strip()), [])
                    if len(sample) < SIZE_SAMPLES:
                        sample.append(str(resolve(self.root, row["mask"])))
        if self.sa_med2d:
            large = large_structures(sizes)
            found = {p: {n for n in names if (p, n) in large} for p, names in found.items()}
        return {p: sorted(names) for p, names in sorted(found.items())}

    def vocabulary(self) -> list[str]:
        """Every structure of the dataset, whatever its protocol (also images whose protocol is unknown)."""
        return sorted(set().union(*(self._names(rows) for rows in self._images()[0].values())))
