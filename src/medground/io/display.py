"""Display slices of canonical RAS+ volumes and intensity windows (CT presets, MR percentiles).

Slice frame (radiological convention), for a canonical array ``a[x, y, z]`` of shape (X, Y, Z) with x ->
patient Right, y -> Anterior, z -> Superior, a display slice ``D[row, col]`` is:

===========  ================================  =========================  ===================  =======
axis         formula                           rows (top -> bottom)       cols (left -> right)  shape
===========  ================================  =========================  ===================  =======
axial z      ``D = a[::-1, ::-1, z].T``        anterior -> posterior      patient R -> L        (Y, X)
coronal y    ``D = a[::-1, y, ::-1].T``        superior -> inferior       patient R -> L        (Z, X)
sagittal x   ``D = a[x, ::-1, ::-1].T``        superior -> inferior       anterior -> posterior (Z, Y)
===========  ================================  =========================  ===================  =======

i.e. axial ``D[r, c] = a[X-1-c, Y-1-r, z]``, coronal ``D[r, c] = a[X-1-c, y, Z-1-r]``, sagittal
``D[r, c] = a[x, Y-1-c, Z-1-r]``. The patient's right is on the image's left, as radiologists read.

Rounding of every uint8 conversion here: ``floor(v + 0.5)`` (round half up) after clipping to [0, 255].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medground.choices import unknown_choice

__all__ = [
    "display_volume",
    "AXES",
    "CT_WINDOWS",
    "DEFAULT_CT_WINDOW",
    "axis_length",
    "ct_window",
    "mr_percentiles",
    "normalize_mr",
    "rescale_to_uint8",
    "slice_spacing",
    "slice_volume",
    "stack_slices",
    "window_ct",
]

AXES: tuple[str, ...] = ("axial", "coronal", "sagittal")
"""Slice axes of :func:`slice_volume`."""

_AXIS_INDEX = {"axial": 2, "coronal": 1, "sagittal": 0}

CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft-tissue": (40.0, 400.0),
    "abdomen": (50.0, 400.0),
    "liver": (30.0, 150.0),
    "mediastinum": (50.0, 350.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
"""CT window presets, name -> (level, width) in HU."""

DEFAULT_CT_WINDOW = "soft-tissue"
"""The default CT window: level 40, width 400 HU, as SA-Med2D and MedSAM use."""


def _axis(axis: str) -> int:
    if axis not in _AXIS_INDEX:
        raise ValueError(unknown_choice("slice axis", axis, AXES))
    return _AXIS_INDEX[axis]


def axis_length(shape: Sequence[int], axis: str) -> int:
    """Number of slices along ``axis`` of a canonical (X, Y, Z) shape: axial Z, coronal Y, sagittal X."""
    return int(shape[_axis(axis)])


def slice_spacing(spacing: Sequence[float], axis: str) -> tuple[float, float]:
    """(row_mm, col_mm) pixel size of a display slice, from canonical (sx, sy, sz) spacing.

    axial (sy, sx), coronal (sz, sx), sagittal (sz, sy).
    """
    _axis(axis)
    sx, sy, sz = (float(v) for v in spacing)
    return {"axial": (sy, sx), "coronal": (sz, sx), "sagittal": (sz, sy)}[axis]


def slice_volume(vol_array: np.ndarray, axis: str, index: int) -> np.ndarray:
    """Display slice ``index`` along ``axis`` of a canonical RAS+ (X, Y, Z) array (see the module table).

    Returns a 2D view-free copy, same dtype. Raises ValueError for a non-3D array or unknown axis and
    IndexError for an index outside ``0 .. axis_length - 1``.
    """
    a = np.asarray(vol_array)
    if a.ndim != 3:
        raise ValueError(f"slice_volume expects a 3D (X, Y, Z) array, got shape {a.shape}")
    n = axis_length(a.shape, axis)
    if not 0 <= int(index) < n:
        raise IndexError(f"{axis} slice index {index} is outside 0..{n - 1}")
    i = int(index)
    if axis == "axial":
        return np.ascontiguousarray(a[::-1, ::-1, i].T)
    if axis == "coronal":
        return np.ascontiguousarray(a[::-1, i, ::-1].T)
    return np.ascontiguousarray(a[i, ::-1, ::-1].T)


def stack_slices(slices: Sequence[np.ndarray], axis: str) -> np.ndarray:
    """Inverse of :func:`slice_volume`: display slices 0..n-1 along ``axis`` -> canonical (X, Y, Z) array.

    Every slice must have the same 2D shape; the dtype is numpy's common dtype of the slices.
    """
    k = _axis(axis)
    if not slices:
        raise ValueError("stack_slices needs at least one slice")
    shapes = {np.shape(s) for s in slices}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"stack_slices needs 2D slices of one shape, got shapes {sorted(shapes)}")
    planes = [np.asarray(s).T[::-1, ::-1] for s in slices]  # each back to its two canonical axes
    return np.ascontiguousarray(np.stack(planes, axis=k))


def ct_window(name: str) -> tuple[float, float]:
    """(level, width) of a CT preset; ValueError listing the presets for an unknown name."""
    if name not in CT_WINDOWS:
        raise ValueError(unknown_choice("CT window", name, CT_WINDOWS))
    return CT_WINDOWS[name]


def _to_uint8(scaled: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(scaled, 0.0, 255.0) + 0.5).astype(np.uint8)


def window_ct(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    """Linear CT window to uint8: ``level - width/2`` -> 0, ``level + width/2`` -> 255, clipped outside.

    ``v = (hu - (level - width/2)) / width * 255`` then round half up; e.g. level 40, width 400:
    -160 -> 0, 40 -> 128 (127.5 rounded up), 240 -> 255. Same shape as ``hu``.
    """
    if not width > 0:
        raise ValueError(f"CT window width must be > 0, got {width}")
    values = np.asarray(hu, dtype=np.float64)
    return _to_uint8((values - (level - width / 2.0)) * 255.0 / width)


def mr_percentiles(volume_array: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> tuple[float, float]:
    """(lo, hi) = the ``lower``/``upper`` percentiles (numpy linear) of the NON-ZERO voxels of a volume.

    Compute once per volume and pass to :func:`rescale_to_uint8` for every slice. An all-zero volume
    gives (0.0, 0.0).
    """
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(f"need 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
    values = np.asarray(volume_array)
    nonzero = values[values != 0]
    if nonzero.size == 0:
        return 0.0, 0.0
    lo, hi = np.percentile(nonzero.astype(np.float64), [lower, upper])
    return float(lo), float(hi)


def rescale_to_uint8(array: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear ``lo -> 0``, ``hi -> 255``, clipped, round half up; ``hi <= lo`` gives zeros."""
    values = np.asarray(array, dtype=np.float64)
    if not hi > lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return _to_uint8((values - lo) * 255.0 / (hi - lo))


def normalize_mr(array: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """uint8 of ``array`` rescaled between its own non-zero percentiles (:func:`mr_percentiles`).

    For slices of one volume, call :func:`mr_percentiles` on the whole volume once instead.
    """
    lo, hi = mr_percentiles(array, lower, upper)
    return rescale_to_uint8(array, lo, hi)


def display_volume(array: np.ndarray, modality: str, window: str = DEFAULT_CT_WINDOW) -> np.ndarray:
    """A whole volume made display-ready (uint8, same shape), as the data engine shows slices:
    CT through the ``window`` preset (soft-tissue: level 40 / width 400), every other modality
    between the 0.5 and 99.5 percentiles of its non-zero voxels."""
    if modality == "ct":
        return window_ct(array, *ct_window(window))
    return normalize_mr(array)
