"""The text -> mask collection: every image of the shared datasets, its structures, its patient and its split.

Images are read through the data engine's sources (any layout it reads); each becomes an
:class:`Entry` holding the structure names (:func:`medground.names.clean_name`, instances of one name
united) and their masks in LiteMedSAM's model frame (:mod:`medground.vision.frames`: longest side 256,
top-left aligned, zero padded to 256 x 256). The split is by patient, fixed by :data:`SPLIT_SEED` and
:data:`SPLIT_RATIOS`; datasets that do not name patients are split by image and reported apart.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from medground.data.sources import Item, open_source
from medground.names import clean_name
from medground.types import Sample
from medground.vision.frames import MODEL_SIZE, Frame

__all__ = [
    "SPLIT_RATIOS",
    "SPLIT_SEED",
    "VOLUME_SLICES",
    "Entry",
    "assign_splits",
    "iter_entries",
    "model_frame_mask",
]

SPLIT_SEED = 24
"""Seed of the patient split (issue 24), fixed before any training."""

SPLIT_RATIOS = {"train": 0.6, "val": 0.2, "test": 0.2}
"""Share of each dataset's patients (or images, when patients are unknown) per split."""

VOLUME_SLICES = 4
"""Slices kept per volume (evenly spaced among its labelled slices), so volumes do not outweigh 2D sets."""


@dataclass
class Entry:
    """One image: ``dataset`` folder name, sample ``id``, patient ``case`` (None: unknown), ``modality``,
    the image ((H, W[, 3]) uint8) and ``structures`` {name: (H, W) bool mask at the image's size}."""

    dataset: str
    id: str
    case: str | None
    modality: str
    image: np.ndarray
    structures: dict[str, np.ndarray]

    @property
    def unit(self) -> str:
        """What the split is drawn over: the patient, or the image when the patient is unknown."""
        return f"patient:{self.case}" if self.case else f"image:{self.id}"


def model_frame_mask(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool mask -> (256, 256) bool in the model frame (area-resized, >= 0.5, zero padding)."""
    frame = Frame(mask.shape[0], mask.shape[1], MODEL_SIZE)
    rows, cols = frame.resized
    x = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    small = F.interpolate(x, size=(rows, cols), mode="area")[0, 0].numpy() >= 0.5
    out = np.zeros((MODEL_SIZE, MODEL_SIZE), dtype=bool)
    out[:rows, :cols] = small
    return out


def _samples(path: Path) -> Iterator[Sample]:
    source = open_source(path)
    for item in source.items():
        if isinstance(item, Item):
            yield from (s for s in source.load(item) if isinstance(s, Sample))


def _volume_samples(path: Path) -> Iterator[Sample]:
    by_case: dict[str, list[Sample]] = {}
    for sample in _samples(path):
        by_case.setdefault(sample.case or sample.id, []).append(sample)
    for samples in by_case.values():
        picks = np.linspace(0, len(samples) - 1, min(VOLUME_SLICES, len(samples))).round().astype(int)
        yield from (samples[i] for i in sorted(set(picks.tolist())))


def iter_entries(dataset: Path, volume: bool = False) -> Iterator[Entry]:
    """Every image of one dataset folder as an :class:`Entry` (``volume``: keep :data:`VOLUME_SLICES` per volume)."""
    for sample in (_volume_samples if volume else _samples)(dataset):
        structures: dict[str, np.ndarray] = {}
        for s in sample.structures:
            name = clean_name(s.name)
            mask = np.asarray(s.mask) > 0
            structures[name] = structures[name] | mask if name in structures else mask
        structures = {k: v for k, v in structures.items() if v.any()}
        if structures:
            yield Entry(
                dataset.name,
                sample.id,
                sample.case or None,
                sample.modality,
                np.asarray(sample.image),
                structures,
            )


def assign_splits(units: dict[str, list[str]], seed: int = SPLIT_SEED) -> dict[str, dict[str, str]]:
    """{dataset: [unit, ...]} -> {dataset: {unit: "train" | "val" | "test"}}.

    Per dataset the sorted units are shuffled by ``numpy.random.default_rng([seed, crc32(dataset)])``;
    the first ``round(0.2 n)`` go to test, the next ``round(0.2 n)`` to val, the rest to train; a dataset
    of 3 or more units gets at least one test and one val unit (1 unit: train; 2: train and test).
    """
    out: dict[str, dict[str, str]] = {}
    for dataset, names in sorted(units.items()):
        order = sorted(set(names))
        rng = np.random.default_rng([seed, zlib.crc32(dataset.encode())])
        order = [order[i] for i in rng.permutation(len(order))]
        n = len(order)
        n_test = max(round(SPLIT_RATIOS["test"] * n), 1 if n >= 2 else 0)
        n_val = max(round(SPLIT_RATIOS["val"] * n), 1 if n >= 3 else 0)
        out[dataset] = {
            u: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, u in enumerate(order)
        }
    return out
