"""What every source provides: a cheap list of work items and a loader that turns one into samples.

An :class:`Item` is a small, picklable description of one image (or one volume) with the key its split
is drawn by. Planning lists items without decoding pixels; workers (local processes or a Dask
cluster) call :meth:`Source.load`, which yields :class:`~medground.types.Sample` objects for what it
could use and :class:`~medground.types.Rejected` entries, with reasons, for what it could not.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from medground.types import Rejected, Sample

__all__ = ["Item", "LoadResult", "Source", "SourceError", "case_key", "resolve"]

LoadResult = Sample | Rejected

_SLICE_SUFFIX = re.compile(r"[_-](?:z|x|y|slice)?\d+$")


class SourceError(ValueError):
    """A source cannot be opened at all (missing index file, unknown layout); names path and fix."""


def case_key(stem: str) -> str:
    """The patient/volume key of an image file stem, so that splits never cut through a case.

    ``AbdomenCT1K--Case_00220--x_0359`` -> ``AbdomenCT1K--Case_00220`` (SA-Med2D: drop the slice part);
    ``BraTS2021_01646_z042`` -> ``BraTS2021_01646``; ``amos_0004_75`` -> ``amos_0004``. A trailing
    number is taken for a slice index only if what remains still holds a digit, so ``img_001`` stays
    ``img_001`` (a plain numbering of separate images, not slices of one case).
    """
    if "--" in stem:
        return stem.rsplit("--", 1)[0]
    stripped = _SLICE_SUFFIX.sub("", stem)
    if stripped != stem and any(ch.isdigit() for ch in stripped):
        return stripped
    return stem


@dataclass(frozen=True)
class Item:
    """One unit of work: an image with its masks, or a volume with its labels.

    ``key`` is unique within the source and stable across runs (it seeds everything about the item);
    ``case`` is the split key; ``payload`` holds what the loader needs (paths as strings, options).
    """

    source: str
    key: str
    case: str
    payload: dict = field(default_factory=dict, hash=False, compare=False)


class Source:
    """Base of all sources. Subclasses are plain dataclasses, so they pickle to workers."""

    kind: str = ""
    name: str = ""
    planning_only: tuple[str, ...] = ()  # attributes that only items() needs; not shipped to workers
    layout: ClassVar[str] = ""  # one line on the files this kind reads: the CLI help, README and errors show it

    @classmethod
    def detect(cls, path: Path) -> bool:
        """Whether ``path`` (a folder or file) is in this layout, by names and cheap peeks only.

        ``open_source`` asks the registered kinds in order; a kind that cannot be told apart is only
        reachable as ``KIND:PATH`` (this default)."""
        return False

    def __getstate__(self) -> dict:
        """Pickled state for workers, without the (possibly huge) index that only planning reads."""
        return {k: v for k, v in self.__dict__.items() if k not in self.planning_only}

    def items(self) -> Iterator[Item | Rejected]:
        """Every item in a stable order, with no pixel decoding; unusable index rows come as Rejected."""
        raise NotImplementedError

    def load(self, item: Item) -> Iterator[LoadResult]:
        """Samples of one item (one for a 2D image, many for a volume) and rejections with reasons."""
        raise NotImplementedError

    def vocabulary(self) -> list[str]:
        """Raw keys of every structure this source annotates (negatives are drawn from these)."""
        raise NotImplementedError


def resolve(root: Path, relative: str) -> Path:
    """A path from an index file, relative to the dataset folder (absolute paths kept)."""
    path = Path(relative)
    return path if path.is_absolute() else root / path
