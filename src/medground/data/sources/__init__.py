"""Sources: each turns one on-disk layout into work items and samples.

``open_source("path")`` detects the layout; ``open_source("kind:path")`` names it. Kinds:

| kind     | layout                                                                        |
|----------|-------------------------------------------------------------------------------|
| medseg   | ``pairs.csv`` + ``labels.json`` + ``meta.json`` + images/ and masks/          |
| sa-med2d | SA-Med2D-20M ``image2label_train.json`` / ``label2image_test.json``            |
| nifti    | ``imagesTr/`` + ``labelsTr/`` (+ labels.json or dataset.json), or a pairs.csv of volumes |
| folder   | ``images/`` + ``masks/`` matched by a name pattern                             |
| dicom    | ``ROOT/<case>/<series>/*.dcm``: image series + one mask/label series per case    |
"""

from __future__ import annotations

import csv
import difflib
from pathlib import Path
from typing import Any

from medground.data.sources.base import Item, Source, SourceError, case_key
from medground.data.sources.dicom import DicomSource
from medground.data.sources.folder import FolderSource
from medground.data.sources.medseg import MedsegSource
from medground.data.sources.samed2d import INDEX_NAMES, SaMed2dSource
from medground.data.sources.volumes import NiftiSource, VolumeOptions

__all__ = [
    "SOURCES",
    "Item",
    "Source",
    "SourceError",
    "VolumeOptions",
    "case_key",
    "detect_kind",
    "open_source",
]

SOURCES: dict[str, type[Source]] = {
    "medseg": MedsegSource,
    "sa-med2d": SaMed2dSource,
    "nifti": NiftiSource,
    "folder": FolderSource,
    "dicom": DicomSource,
}


def _pairs_are_volumes(path: Path) -> bool:
    with open(path / "pairs.csv", newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), [])
    return "label" in header and "mask" not in header


def detect_kind(path: Path) -> str:
    """The layout of a path, by the files it holds."""
    if path.is_file():
        if path.name in INDEX_NAMES or path.suffix == ".json":
            return "sa-med2d"
        raise SourceError(f"{path}: a source is a folder or an SA-Med2D index file")
    if not path.is_dir():
        raise SourceError(f"{path}: no such folder")
    if (path / "pairs.csv").exists():
        return "nifti" if _pairs_are_volumes(path) else "medseg"
    if any((path / name).exists() for name in INDEX_NAMES):
        return "sa-med2d"
    if (path / "imagesTr").is_dir():
        return "nifti"
    if (path / "images").is_dir() and (path / "masks").is_dir():
        return "folder"
    if any(p.suffix.lower() == ".dcm" for p in path.rglob("*.dcm")):
        return "dicom"
    raise SourceError(
        f"{path}: unknown layout; expected pairs.csv (medseg), an SA-Med2D index, imagesTr/+labelsTr/ (nifti), "
        "images/+masks/ (folder) or DICOM series folders (dicom); or name the kind as KIND:PATH"
    )


def open_source(spec: str | Path, **options: Any) -> Source:
    """Open ``PATH`` or ``KIND:PATH``; ``options`` go to the source (those it does not take are ignored)."""
    text = str(spec)
    kind, _, rest = text.partition(":")
    if rest and kind in SOURCES:
        path = Path(rest)
    elif rest and not Path(text).exists() and len(kind) > 1:
        close = difflib.get_close_matches(kind, list(SOURCES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise SourceError(f"unknown source kind {kind!r} in {text!r}; known: {', '.join(SOURCES)}.{hint}")
    else:
        path, kind = Path(text), detect_kind(Path(text))
    cls = SOURCES[kind]
    fields = cls.__dataclass_fields__  # type: ignore[attr-defined]
    accepted = {k: v for k, v in options.items() if k in fields and v is not None}
    first = "path" if "path" in fields else "root"
    return cls(**{first: path}, **accepted)
