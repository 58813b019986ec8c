"""NIfTI image/label volume pairs, sliced into 2D samples.

Two layouts: nnU-Net/MSD style ``imagesTr/`` + ``labelsTr/`` (image ``case_0000.nii.gz`` pairs with
label ``case.nii.gz``; names from ``labels.json`` or ``dataset.json``'s ``labels``), and the medvol
layout (``pairs.csv`` with ``image``, ``label`` and optional ``modality`` columns). Volumes are put in
RAS+ orientation, sliced along the chosen planes in radiological display, and made display-ready: CT
by a window preset (soft-tissue level 40 / width 400 by default, as SA-Med2D and MedSAM), MR and
the rest by the 0.5-99.5 percentiles of the volume's non-zero voxels. Only slices with a labelled
voxel become samples.

The patient key is the pairs.csv ``case`` column, else the image volume's own name (never a slice rule
on volume names): pairs that share an image volume (several label volumes of one CT) or a label volume
(several sequences registered to one label) are one case, named after the first image in file order
(without an nnU-Net channel suffix: ``case_00220_0000`` of label ``case_00220`` is case ``case_00220``).
Several sequences of one subject with labels of their own need the ``case`` column. A slice's label
volume is its labelling protocol (its named values are labelled exhaustively), and each slice knows
the structures labelled within a few slices of it, so neither is ever called absent wrongly.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from medground.data.sources.base import (
    NEARBY_SLICES,
    Item,
    LoadResult,
    Source,
    SourceError,
    clean_region,
    read_meta,
    resolve,
)
from medground.data.sources.peek import csv_header
from medground.io import (
    CT_WINDOWS,
    ReadError,
    Volume,
    axis_length,
    display_volume,
    load_label_volume,
    load_volume,
    slice_spacing,
    slice_volume,
)
from medground.types import Rejected, Sample, StructureMask

__all__ = ["NiftiSource", "VolumeOptions", "VolumeSource", "nifti_stem", "volume_case"]

PLANES = ("axial", "coronal", "sagittal")


def nifti_stem(path: str | Path) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


@dataclass(frozen=True)
class VolumeOptions:
    """How volumes become 2D samples."""

    planes: tuple[str, ...] = ("axial",)  # slicing planes: any of axial, coronal, sagittal
    slice_step: int = 1  # keep every n-th labelled slice
    ct_window: str = "soft-tissue"  # CT window preset name (see medground.io.CT_WINDOWS)

    def __post_init__(self) -> None:
        unknown = [p for p in self.planes if p not in PLANES]
        if unknown or not self.planes:
            raise ValueError(f"planes must be among {PLANES}, got {self.planes}")
        if self.slice_step < 1:
            raise ValueError(f"slice_step must be >= 1, got {self.slice_step}")
        if self.ct_window not in CT_WINDOWS:
            raise ValueError(f"unknown CT window {self.ct_window!r}; known: {', '.join(CT_WINDOWS)}")


def _named_values(mapping: dict) -> dict[int, str]:
    """{value: name} from a labels mapping, background (0) and non-numeric keys left out."""
    pairs = {int(k): str(v) for k, v in mapping.items() if str(k).isdigit() and not isinstance(v, dict)}
    if not pairs:  # nnU-Net v2 dataset.json maps name -> value
        pairs = {int(v): str(k) for k, v in mapping.items() if isinstance(v, int)}
    return {k: v for k, v in pairs.items() if k != 0}


def _labels_file(root: Path) -> dict:
    for name in ("labels.json", "dataset.json"):
        path = root / name
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            return data.get("labels", data) if name == "dataset.json" else data
    return {}


def _labels_for(labels: dict, label_path: str, row_values: str | None) -> dict[int, str]:
    """Names of one label volume: the row's ``label_values`` ("1=edema,2=..."), else the labels.json
    group whose key is in the label file's name (``{"oars": {...}, "targets": {...}}``), else labels.json."""
    if row_values and "=" in row_values:
        parsed = dict(part.split("=", 1) for part in row_values.split(",") if "=" in part)
        named = {int(k): v.strip() for k, v in parsed.items() if k.strip().isdigit() and int(k) != 0}
        if named:
            return named
    stem = nifti_stem(label_path)
    for key, group in labels.items():
        if isinstance(group, dict) and key in stem:
            return _named_values(group)
    return _named_values(labels)


def volume_case(image: str | Path, label: str | Path) -> str:
    """The case name of an (image, label) volume pair: the image's stem without an nnU-Net channel
    suffix (``case_00220_0000`` with label ``case_00220`` -> ``case_00220``: the patient, not channel 0),
    else the image's stem."""
    stem, label_stem = nifti_stem(image), nifti_stem(label)
    return label_stem if re.fullmatch(re.escape(label_stem) + r"_\d{4}", stem) else stem


def _shared_cases(pairs: list[dict]) -> list[str]:
    """One case name per pair: pairs linked by a shared image or label volume form one case, named
    after the stem of its first image volume in ``pairs`` order (union-find over the file paths)."""
    parent: dict[str, str] = {}

    def root(node: str) -> str:
        while parent.setdefault(node, node) != node:
            node = parent[node]
        return node

    for pair in pairs:
        a, b = root("i:" + pair["image"]), root("l:" + pair["label"])
        if a != b:
            parent[max(a, b)] = min(a, b)
    names: dict[str, str] = {}
    for pair in pairs:
        names.setdefault(root("i:" + pair["image"]), volume_case(pair["image"], pair["label"]))
    return [names[root("i:" + pair["image"])] for pair in pairs]


def _nearby(present: list[set[int]], index: int) -> set[int]:
    """Label values present in the slices within NEARBY_SLICES of ``index`` (itself excluded)."""
    low, high = max(0, index - NEARBY_SLICES), min(len(present), index + NEARBY_SLICES + 1)
    return set().union(*(present[i] for i in range(low, high) if i != index))


class VolumeSource(Source):
    """What volume sources share: display windowing and slicing of (image, label) volume pairs.

    Subclasses give ``read(item) -> (image, label)`` and items whose payload holds ``modality`` and
    ``labels`` ({value: name}); they also carry ``name``, ``body_region`` and ``options``.
    """

    options: VolumeOptions
    body_region: str | None

    def read(self, item: Item) -> tuple[Volume, Volume]:
        """(image volume, label volume on the same grid); raises ReadError."""
        raise NotImplementedError

    def load(self, item: Item) -> Iterator[LoadResult]:
        try:
            volume, label = self.read(item)
        except ReadError as error:
            yield Rejected(str(error.path), error.reason, self.name)
            return
        names = item.payload["labels"]
        present = [int(v) for v in np.unique(label.array) if v != 0]
        unknown = [v for v in present if v not in names]
        if unknown:
            yield Rejected(
                item.payload["label"],
                f"label values {unknown} not named in labels.json; they are left out",
                self.name,
            )
        known = [v for v in present if v in names]
        if not known:
            yield Rejected(item.payload["label"], "label volume has no named foreground", self.name)
            return
        display = display_volume(volume.array, item.payload["modality"], self.options.ct_window)
        for plane in self.options.planes:
            spacing = slice_spacing(volume.spacing, plane)
            yield from self._slices(item, display, label.array, {v: names[v] for v in known}, plane, spacing)

    def _slices(
        self,
        item: Item,
        display: np.ndarray,
        labels: np.ndarray,
        known: dict[int, str],
        plane: str,
        spacing: tuple[float, float],
    ) -> Iterator[Sample]:
        kept = 0
        slices = [slice_volume(labels, plane, i) for i in range(axis_length(labels.shape, plane))]
        present = [{v for v in known if (s == v).any()} for s in slices]
        for index, label_slice in enumerate(slices):
            values = [v for v in known if v in present[index]]
            if not values:
                continue
            kept += 1
            if (kept - 1) % self.options.slice_step:
                continue
            structures = [StructureMask(known[v], label_slice == v) for v in values]
            yield Sample(
                id=f"{self.name}/{item.key}_{plane}{index:03d}",
                image=slice_volume(display, plane, index),
                modality=item.payload["modality"],
                source=self.name,
                case=item.case,
                structures=structures,
                plane=plane,
                body_region=self.body_region,
                spacing=spacing,
                display=None if plane == "sagittal" else "radiological",
                meta={
                    "volume": item.key,
                    "slice": index,
                    "protocol": item.payload["label"],
                    "nearby": sorted(known[v] for v in _nearby(present, index) - set(values)),
                    "case_from": item.payload.get("case_from"),  # an identifier: pseudonymised in records
                },
            )


@dataclass
class NiftiSource(VolumeSource):
    """Image/label NIfTI volume pairs in a folder."""

    root: Path
    name: str = ""
    modality: str | None = None
    options: VolumeOptions = field(default_factory=VolumeOptions)
    kind: str = "nifti"
    planning_only: tuple[str, ...] = ("pairs",)
    layout: ClassVar[str] = (
        "imagesTr/ + labelsTr/ (nnU-Net / MSD) with labels.json or dataset.json, or a pairs.csv of "
        "image,label[,modality,label_values] volumes"
    )

    @classmethod
    def detect(cls, path: Path) -> bool:
        """A pairs.csv with a label column and no mask column, or (without pairs.csv) an imagesTr/ folder."""
        header = csv_header(path / "pairs.csv")
        if header:
            return "label" in header and "mask" not in header
        return (path / "imagesTr").is_dir()

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.name = self.name or self.root.name
        meta = read_meta(self.root)
        self.body_region = clean_region(meta.get("body_region"))
        self.read_case_policy(meta, self.root / "meta.json")
        self.pairs = self._pairs(meta, _labels_file(self.root))
        if not any(p["labels"] for p in self.pairs):
            raise SourceError(
                f'{self.root}: no label names; add labels.json ({{"1": "liver"}}) or a label_values column'
            )

    def _pairs(self, meta: dict, labels: dict) -> list[dict]:
        """One dict per (image, label) pair: paths, modality and label names."""
        if (self.root / "pairs.csv").exists():
            with open(self.root / "pairs.csv", newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        else:
            images, label_dir = self.root / "imagesTr", self.root / "labelsTr"
            if not images.is_dir() or not label_dir.is_dir():
                raise SourceError(
                    f"{self.root}: expected imagesTr/ and labelsTr/ or a pairs.csv with image,label"
                )
            rows = []
            for image in sorted(images.glob("*.nii*")):
                stem = nifti_stem(image)
                label_stem = stem[:-5] if stem[-5:-4] == "_" and stem[-4:].isdigit() else stem
                rows.append({"image": str(image), "label": str(label_dir / f"{label_stem}.nii.gz")})
        pairs = []
        for row in rows:
            image, label = str(resolve(self.root, row["image"])), str(resolve(self.root, row["label"]))
            where = f"pairs.csv ({Path(image).name})" if row.get("modality") else "meta.json"
            pairs.append(
                {
                    "image": image,
                    "label": label,
                    "modality": self.modality_of(
                        row.get("modality") or meta.get("modality"), self.modality, where
                    ),
                    "labels": _labels_for(labels, label, row.get("label_values")),
                    "case": (row.get("case") or "").strip() or None,
                }
            )
        return sorted(pairs, key=lambda p: (p["image"], p["label"]))

    def items(self) -> Iterator[Item | Rejected]:
        stems = [nifti_stem(p["image"]) for p in self.pairs]
        shared = _shared_cases(self.pairs)
        for pair, stem, volume_case in zip(self.pairs, stems, shared, strict=True):
            if not pair["modality"]:
                yield Rejected(
                    pair["image"], "no modality (pairs.csv column, meta.json or --modality)", self.name
                )
                continue
            key = stem if stems.count(stem) == 1 else f"{stem}__{nifti_stem(pair['label'])}"
            yield Item(self.name, key, self.patient(volume_case, key, pair["case"]), dict(pair))

    def read(self, item: Item) -> tuple[Volume, Volume]:
        volume = load_volume(item.payload["image"])
        return volume, load_label_volume(item.payload["label"], like=volume)

    def protocols(self) -> dict[str, list[str]]:
        """Each label volume is its own protocol: the values it names are labelled exhaustively in it."""
        return {pair["label"]: sorted(set(pair["labels"].values())) for pair in self.pairs}
