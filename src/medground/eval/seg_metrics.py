"""Overlap and surface metrics for binary masks, 2D (H, W) or 3D (D, H, W), with voxel spacing.

Surfaces are the border voxels of a mask: the voxels of the mask that a one-voxel erosion with a
face-connected structuring element removes (voxels on the array edge count as border), as in medpy.
Surface distances are Euclidean, in millimetres when ``spacing`` (mm per axis, same order as the
array axes) is given, else in voxels.

* Dice = 2|P∩G| / (|P| + |G|);  IoU = |P∩G| / |P∪G|.
* HD95: the 95th percentile of the pooled distances from P's surface to G's and from G's to P's
  (medpy's ``hd95``).
* NSD at tolerance τ mm (Nikolov et al. 2021, counted on border voxels):
  (#{p ∈ ∂P : d(p, ∂G) <= τ} + #{g ∈ ∂G : d(g, ∂P) <= τ}) / (|∂P| + |∂G|).

Empty masks follow :class:`EmptyRule`, stated in every report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "EmptyRule",
    "MaskScores",
    "dice",
    "failure_scores",
    "hd95",
    "iou",
    "nsd",
    "score_masks",
    "surface_distances",
]

_BOTH = ("perfect", "nan")
_ONE_HD = ("nan", "diagonal", "inf")


@dataclass(frozen=True)
class EmptyRule:
    """What the metrics are when a mask is empty."""

    both_empty: str = "perfect"
    """empty truth and empty prediction: 'perfect' (Dice = IoU = NSD = 1, HD95 = 0) or 'nan' (left out of means)"""
    one_empty_hd: str = "nan"
    """HD95 when exactly one is empty: 'nan' (left out of the HD95 mean), 'diagonal' (the image diagonal
    in mm, the worst possible) or 'inf'; Dice, IoU and NSD are 0 there in every case"""

    def __post_init__(self) -> None:
        if self.both_empty not in _BOTH:
            raise ValueError(f"EmptyRule.both_empty={self.both_empty!r}; expected one of {_BOTH}")
        if self.one_empty_hd not in _ONE_HD:
            raise ValueError(f"EmptyRule.one_empty_hd={self.one_empty_hd!r}; expected one of {_ONE_HD}")

    def describe(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class MaskScores:
    """Metrics of one prediction/truth pair; NaN means not defined under the EmptyRule."""

    dice: float
    iou: float
    hd95: float
    nsd: float
    pred_voxels: int
    truth_voxels: int


def _check(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...] | None) -> tuple[float, ...]:
    if pred.shape != truth.shape:
        raise ValueError(
            f"prediction shape {pred.shape} differs from ground truth shape {truth.shape}; "
            "resample the prediction onto the ground-truth grid"
        )
    if pred.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D (H, W) or 3D (D, H, W), got {pred.ndim} dimensions")
    spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * pred.ndim
    if len(spacing) != pred.ndim or min(spacing) <= 0:
        raise ValueError(f"spacing {spacing} must give one positive value per axis of a {pred.ndim}D mask")
    return spacing


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks of one shape; NaN when both are empty."""
    p, t = pred.astype(bool), truth.astype(bool)
    total = int(p.sum()) + int(t.sum())
    return 2.0 * int(np.logical_and(p, t).sum()) / total if total else float("nan")


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two boolean masks; NaN when both are empty."""
    p, t = pred.astype(bool), truth.astype(bool)
    union = int(np.logical_or(p, t).sum())
    return int(np.logical_and(p, t).sum()) / union if union else float("nan")


def _border(mask: np.ndarray) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, iterations=1)


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...] | None = None) -> np.ndarray:
    """(|∂A|,) distances from each border voxel of ``a`` to the nearest border voxel of ``b``; both non-empty."""
    a, b = a.astype(bool), b.astype(bool)
    spacing = _check(a, b, spacing)
    to_b = ndimage.distance_transform_edt(~_border(b), sampling=spacing)
    return to_b[_border(a)]


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...] | None = None) -> float:
    """95th percentile symmetric surface distance (mm with spacing); NaN if either mask is empty."""
    p, t = pred.astype(bool), truth.astype(bool)
    if not p.any() or not t.any():
        return float("nan")
    both = np.hstack([surface_distances(p, t, spacing), surface_distances(t, p, spacing)])
    return float(np.percentile(both, 95))


def nsd(
    pred: np.ndarray, truth: np.ndarray, tolerance_mm: float = 1.0, spacing: tuple[float, ...] | None = None
) -> float:
    """Normalised surface Dice at ``tolerance_mm``; 0 if exactly one mask is empty, NaN if both are."""
    p, t = pred.astype(bool), truth.astype(bool)
    if not p.any() and not t.any():
        return float("nan")
    if not p.any() or not t.any():
        return 0.0
    d_pt, d_tp = surface_distances(p, t, spacing), surface_distances(t, p, spacing)
    return float(((d_pt <= tolerance_mm).sum() + (d_tp <= tolerance_mm).sum()) / (d_pt.size + d_tp.size))


def score_masks(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: tuple[float, ...] | None = None,
    tolerance_mm: float = 1.0,
    rule: EmptyRule | None = None,
) -> MaskScores:
    """All metrics of one pair under ``rule``. pred/truth: (H, W) or (D, H, W), non-zero = foreground."""
    rule = rule or EmptyRule()
    p, t = pred.astype(bool), truth.astype(bool)
    spacing = _check(p, t, spacing)
    counts = {"pred_voxels": int(p.sum()), "truth_voxels": int(t.sum())}
    if not p.any() and not t.any():
        value = 1.0 if rule.both_empty == "perfect" else float("nan")
        hd = 0.0 if rule.both_empty == "perfect" else float("nan")
        return MaskScores(dice=value, iou=value, hd95=hd, nsd=value, **counts)
    if not p.any() or not t.any():
        return failure_scores(t, spacing, rule, pred_voxels=counts["pred_voxels"])
    p, t = _crop_to_union(p, t)
    d_pt, d_tp = surface_distances(p, t, spacing), surface_distances(t, p, spacing)
    close = (d_pt <= tolerance_mm).sum() + (d_tp <= tolerance_mm).sum()
    hd = float(np.percentile(np.hstack([d_pt, d_tp]), 95))
    nsd_value = float(close / (d_pt.size + d_tp.size))
    return MaskScores(dice=dice(p, t), iou=iou(p, t), hd95=hd, nsd=nsd_value, **counts)


def failure_scores(
    truth: np.ndarray, spacing: tuple[float, ...], rule: EmptyRule, pred_voxels: int = 0
) -> MaskScores:
    """Scores of a failed case (one mask empty, or the prediction missing): Dice = IoU = NSD = 0 and
    HD95 by ``rule.one_empty_hd`` ('diagonal' = the array diagonal in mm)."""
    diagonal = float(np.sqrt(sum((n * s) ** 2 for n, s in zip(truth.shape, spacing, strict=True))))
    hd = {"nan": float("nan"), "inf": float("inf"), "diagonal": diagonal}[rule.one_empty_hd]
    return MaskScores(
        dice=0.0, iou=0.0, hd95=hd, nsd=0.0, pred_voxels=pred_voxels, truth_voxels=int(truth.sum())
    )


def _crop_to_union(p: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to their union's box grown by one voxel.

    Every metric is unchanged (all border voxels stay inside and everything outside the box is
    background either way); the erosions and distance transforms get much smaller.
    """
    union = p | t
    box = []
    for axis in range(union.ndim):
        idx = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        box.append(slice(max(0, int(idx[0]) - 1), int(idx[-1]) + 2))
    return p[tuple(box)], t[tuple(box)]
