"""The few data types shared by every stage.

Coordinate frame: boxes are absolute pixel coordinates of the saved image, ``[x0, y0, x1, y1)``:
x0/y0 are the first column/row inside the region and x1/y1 are exclusive (last column/row + 1).
An empty region has no box (``None``), never a box of zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Box", "Region", "Rejected", "Sample", "StructureMask", "Turn", "tight_box"]

_INTEGER_TYPES = (int, np.integer)


@dataclass(frozen=True, order=True)
class Box:
    """Axis-aligned box in absolute pixels, x1/y1 exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    def __post_init__(self) -> None:
        values = (self.x0, self.y0, self.x1, self.y1)
        if not all(isinstance(v, _INTEGER_TYPES) for v in values):
            raise TypeError(f"Box coordinates must be integers, got {values}")
        if self.x0 < 0 or self.y0 < 0 or self.x1 <= self.x0 or self.y1 <= self.y0:
            raise ValueError(f"Box needs 0 <= x0 < x1 and 0 <= y0 < y1, got {values}")

    @classmethod
    def from_list(cls, values: list[int] | tuple[int, ...]) -> Box:
        if len(values) != 4:
            raise ValueError(f"a box has 4 values [x0, y0, x1, y1], got {list(values)}")
        return cls(*(int(v) for v in values))

    def as_list(self) -> list[int]:
        return [int(self.x0), int(self.y0), int(self.x1), int(self.y1)]

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        """(x, y) centre in pixel units of the same frame."""
        return (self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0

    def iou(self, other: Box) -> float:
        ix = max(0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        return inter / float(self.area + other.area - inter)

    def fits(self, width: int, height: int) -> bool:
        return self.x1 <= width and self.y1 <= height


def tight_box(mask: np.ndarray) -> Box | None:
    """Tight box of the non-zero pixels of a (H, W) mask; ``None`` when the mask is empty."""
    if mask.ndim != 2:
        raise ValueError(f"tight_box expects a 2D (H, W) mask, got shape {mask.shape}")
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return Box(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


@dataclass
class StructureMask:
    """One annotated structure of one image, as a source delivers it.

    mask: (H, W) bool, same size as the sample's image. ``instance`` is the dataset's own instance
    index when the dataset already split instances (SA-Med2D ``_000``/``_001``), else ``None``.
    ``instance_map`` marks masks whose integer values are instance ids (1..N, 0 = background).
    """

    name: str
    mask: np.ndarray
    instance: int | None = None
    instance_map: bool = False


@dataclass
class Sample:
    """One 2D image with its structures, ready for region extraction.

    image: (H, W) or (H, W, 3) uint8, display-ready (windowed/normalised); or an object with that
    ``shape`` that ``np.asarray`` decodes (``medground.io.StoredImage``: a checked PNG the build copies
    without decoding). ``case`` is the patient key that
    splits are made by (never a slice), or None when the patient is unknown (such images go to train). ``spacing`` is (row, column) mm.
    ``display`` is "radiological" when the image's left is known to be the patient's right (slices
    medground cut from volumes, or a dataset whose meta.json says so), else None: unknown.
    """

    id: str
    image: np.ndarray
    modality: str
    source: str
    case: str | None
    structures: list[StructureMask]
    plane: str | None = None
    body_region: str | None = None
    spacing: tuple[float, float] | None = None
    display: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass
class Region:
    """One instance of one structure: a connected piece (or the whole structure) with its tight box.

    mask: (box.height, box.width) bool, the region's pixels *inside its box* (the box is tight, so the
    crop's first/last rows and columns hold foreground); :meth:`full_mask` pastes it into the image
    frame. ``name`` is the clean display name ("left hip"), ``key`` the dataset's raw name
    ("hip_left"); ``instance`` counts instances of that structure in the image from 0; ``position`` is
    a phrase such as "in the upper left part of the image".
    """

    name: str
    key: str
    box: Box
    mask: np.ndarray
    instance: int
    area: int
    position: str = ""

    def full_mask(self, height: int, width: int) -> np.ndarray:
        """(height, width) bool mask of the region in the image frame."""
        full = np.zeros((height, width), bool)
        full[self.box.y0 : self.box.y1, self.box.x0 : self.box.x1] = self.mask
        return full


@dataclass(frozen=True)
class Rejected:
    """An input that was not used, with the reason. Written to ``skipped.jsonl``."""

    input: str
    reason: str
    source: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"input": self.input, "reason": self.reason, "source": self.source}


@dataclass
class Turn:
    """One question/answer pair of a conversation: what the data engine writes and what training reads.

    ``task`` is a task name ("rec", "roc", "reg", "mia"; "" where a record does not say); ``question``
    and ``answer`` are texts in one box dialect, the question without the ``<image>`` placeholder;
    ``regions`` index the record's region list (the regions the turn names); ``structure`` is the
    clean name asked about (None for a turn about no one structure, such as ``mia``); ``negative``
    marks a question about a structure that is not in the image.
    """

    task: str
    question: str
    answer: str
    regions: list[int] = field(default_factory=list)
    structure: str | None = None
    negative: bool = False
