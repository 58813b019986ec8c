"""DICOM image series with label series: one folder per case, one sub-folder per series.

``ROOT/<case>/<series>/*.dcm`` (or ``ROOT/<series>/`` for a single case). In each case, the series
whose folder name or SeriesDescription says mask, seg, label or roi is the label series (values
0/1/2..., same grid as the images: TCIA's ``MaskTumor``); every other series is an image series
paired with it. Label names come from ``labels.json`` beside the cases, else from the label series'
name with the mask word taken out ("MaskTumor" -> "tumor"). The modality is the DICOM Modality tag
(``--modality`` fills in only where it is empty). The patient key is the image series' PatientID, else
the case folder's name; the label series is the labelling protocol of its case.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from medground.data.sources.base import Item, SourceError, clean_region, read_meta
from medground.data.sources.volumes import VolumeOptions, VolumeSource
from medground.io import ReadError, Volume, dicom_series_info, load_dicom_series
from medground.names import clean_name
from medground.types import Rejected

__all__ = ["DicomSource", "is_label_series"]

_LABEL_WORDS = re.compile(r"(mask|seg(mentation)?|label|roi)", re.IGNORECASE)
_AFFINE_TOLERANCE = 1e-3


def is_label_series(folder_name: str, description: str) -> bool:
    return bool(_LABEL_WORDS.search(folder_name) or _LABEL_WORDS.search(description))


def _label_name(folder_name: str, description: str) -> str:
    for text in (description, folder_name):
        try:
            return clean_name(_LABEL_WORDS.sub(" ", text))
        except ValueError:  # nothing left once the mask word is taken out
            continue
    return "structure"


@dataclass
class DicomSource(VolumeSource):
    """Cases of DICOM image series with a label series on the same grid."""

    root: Path
    name: str = ""
    modality: str | None = None
    options: VolumeOptions = field(default_factory=VolumeOptions)
    kind: str = "dicom"
    planning_only: tuple[str, ...] = ("cases",)
    layout: ClassVar[str] = (
        "ROOT/<case>/<series>/*.dcm: each case's image series paired with its one mask/label series "
        "(folder name or SeriesDescription says mask, seg, label or roi)"
    )

    @classmethod
    def detect(cls, path: Path) -> bool:
        """A folder with a .dcm file anywhere below it."""
        return path.is_dir() and any(True for _ in path.rglob("*.dcm"))

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: no such folder")
        self.name = self.name or self.root.name
        meta = read_meta(self.root)
        self.body_region = clean_region(meta.get("body_region"))
        self.read_case_policy(meta, self.root / "meta.json")
        labels_path = self.root / "labels.json"
        raw = json.loads(labels_path.read_text(encoding="utf-8")) if labels_path.exists() else {}
        self.labels = {int(k): str(v) for k, v in raw.items() if str(k).isdigit() and int(k) != 0}
        self.cases = self._cases()
        if not self.cases:
            raise SourceError(f"{self.root}: no DICOM series found (expected ROOT/<case>/<series>/*.dcm)")

    def _series(self, case: Path) -> list[tuple[Path, dict[str, str]]]:
        found = []
        for folder in sorted(p for p in case.iterdir() if p.is_dir()):
            info = dicom_series_info(folder)
            if info is not None:
                found.append((folder, info))
        return found

    def _cases(self) -> dict[str, list[tuple[Path, dict[str, str]]]]:
        direct = self._series(self.root)
        if direct:
            return {self.root.name: direct}
        cases = {}
        for case in sorted(p for p in self.root.iterdir() if p.is_dir()):
            series = self._series(case)
            if series:
                cases[case.name] = series
        return cases

    def items(self) -> Iterator[Item | Rejected]:
        for case, series in self.cases.items():
            masks = [(f, i) for f, i in series if is_label_series(f.name, i["description"])]
            images = [(f, i) for f, i in series if not is_label_series(f.name, i["description"])]
            if len(masks) != 1 or not images:
                yield Rejected(
                    str(self.root / case),
                    f"case needs one label series and at least one image series; found "
                    f"{len(masks)} label and {len(images)} image series",
                    self.name,
                )
                continue
            mask_folder, mask_info = masks[0]
            labels = self.labels or {1: _label_name(mask_folder.name, mask_info["description"])}
            for folder, info in images:
                modality = self.modality_of(info["modality"], self.modality, "the DICOM Modality tag")
                if not modality:
                    yield Rejected(str(folder), "no Modality tag; pass --modality", self.name)
                    continue
                payload = {
                    "image": str(folder),
                    "label": str(mask_folder),
                    "modality": modality,
                    "labels": labels,
                }
                if info.get("patient_id"):  # an identifier: records carry a pseudonym of it
                    payload["case_from"] = "PatientID"
                key = f"{case}__{folder.name}"
                yield Item(self.name, key, self.patient(case, key, info.get("patient_id")), payload)

    def read(self, item: Item) -> tuple[Volume, Volume]:
        volume = load_dicom_series(item.payload["image"])
        label = load_dicom_series(item.payload["label"])
        if volume.shape != label.shape or not np.allclose(
            volume.affine, label.affine, atol=_AFFINE_TOLERANCE
        ):
            raise ReadError(
                item.payload["label"],
                f"label series grid {label.shape} does not match image series "
                f"{item.payload['image']} {volume.shape} (shape or position)",
            )
        values = np.rint(label.array)
        if not np.array_equal(values, label.array):
            raise ReadError(
                item.payload["label"], "label series holds non-integer values; expected 0/1/2... labels"
            )
        return volume, Volume(
            values.astype(np.int32),
            label.spacing,
            label.affine,
            label.original_axcodes,
            label.original_affine,
            label.path,
            label.header,
        )

    def protocols(self) -> dict[str, list[str]]:
        """Each case's label series is its own protocol (the values it names are labelled exhaustively)."""
        found: dict[str, set[str]] = {}
        for item in self.items():
            if isinstance(item, Item):
                found.setdefault(item.payload["label"], set()).update(item.payload["labels"].values())
        return {label: sorted(names) for label, names in sorted(found.items())}
