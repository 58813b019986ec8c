"""Sources: each turns one on-disk layout into work items and samples.

The registry is :data:`REGISTRY`, one list of source classes; each class names its ``kind``, describes
its files in ``layout`` and recognises them in ``detect``. ``open_source("path")`` asks the classes in
registry order and takes the first that recognises the path; ``open_source("kind:path")`` names the
kind. The CLI help, the error for an unknown layout and the ICL loader's messages are generated from
here (:func:`describe_layouts`). A new layout is one module and one line in :data:`REGISTRY`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medground.choices import unknown_choice
from medground.data.sources.base import Item, Source, SourceError, case_key
from medground.data.sources.coco import CocoSource
from medground.data.sources.dicom import DicomSource
from medground.data.sources.folder import FolderSource
from medground.data.sources.medseg import MedsegSource
from medground.data.sources.samed2d import SaMed2dSource
from medground.data.sources.volumes import NiftiSource, VolumeOptions

__all__ = [
    "REGISTRY",
    "SOURCES",
    "Item",
    "Source",
    "SourceError",
    "VolumeOptions",
    "case_key",
    "describe_layouts",
    "detect_kind",
    "open_source",
]

REGISTRY: tuple[type[Source], ...] = (
    MedsegSource,
    NiftiSource,
    SaMed2dSource,
    CocoSource,
    FolderSource,
    DicomSource,  # last: its detection walks the folder tree
)
"""Every source class, in detection order."""

SOURCES: dict[str, type[Source]] = {cls.kind: cls for cls in REGISTRY}
"""Kind name -> source class."""


def describe_layouts(separator: str = "; ") -> str:
    """``kind: layout`` for every registered kind, joined by ``separator`` (help and error texts)."""
    return separator.join(f"{cls.kind}: {cls.layout}" for cls in REGISTRY)


def detect_kind(path: Path) -> str:
    """The kind of the first registered source class that recognises ``path``."""
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    for cls in REGISTRY:
        if cls.detect(path):
            return cls.kind
    raise SourceError(
        f"{path}: unknown layout; name the kind as KIND:PATH or use one of these layouts: {describe_layouts()}"
    )


def open_source(spec: str | Path, **options: Any) -> Source:
    """Open ``PATH`` or ``KIND:PATH``; ``options`` go to the source (those it does not take are ignored)."""
    text = str(spec)
    kind, _, rest = text.partition(":")
    if rest and kind in SOURCES:
        path = Path(rest)
    elif rest and not Path(text).exists() and len(kind) > 1:
        raise SourceError(f"{text}: {unknown_choice('source kind', kind, SOURCES)}")
    else:
        path, kind = Path(text), detect_kind(Path(text))
    cls = SOURCES[kind]
    fields = cls.__dataclass_fields__  # type: ignore[attr-defined]
    accepted = {k: v for k, v in options.items() if k in fields and v is not None}
    first = "path" if "path" in fields else "root"
    return cls(**{first: path}, **accepted)
