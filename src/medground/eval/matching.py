"""One-to-one box matching (Hungarian) for the strict protocol.

Boxes are :class:`medground.types.Box` in one frame (absolute pixels, x1/y1 exclusive), IoU without
any +1 pixel convention. Each predicted box matches at most one ground-truth box and vice versa.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from medground.types import Box

__all__ = ["iou_matrix", "match_boxes", "matched_iou_sum"]


def iou_matrix(predicted: list[Box], truth: list[Box]) -> np.ndarray:
    """(P, G) float64 IoU of every predicted box against every ground-truth box."""
    out = np.zeros((len(predicted), len(truth)), dtype=float)
    for i, p in enumerate(predicted):
        for j, g in enumerate(truth):
            out[i, j] = p.iou(g)
    return out


def match_boxes(ious: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Largest one-to-one set of (pred, gt) pairs with IoU >= threshold; ties go to the larger IoU sum.

    ious: (P, G) from :func:`iou_matrix`. Returns (pred index, gt index, IoU) triples.
    """
    if ious.size == 0:
        return []
    valid = ious >= threshold
    # a weight of (big + IoU) per valid pair makes the assignment maximise the number of pairs first
    big = float(min(ious.shape) + 1)
    weights = np.where(valid, big + ious, 0.0)
    rows, cols = linear_sum_assignment(weights, maximize=True)
    return [(int(r), int(c), float(ious[r, c])) for r, c in zip(rows, cols, strict=True) if valid[r, c]]


def matched_iou_sum(ious: np.ndarray) -> float:
    """Sum of IoUs of the one-to-one assignment with the largest total IoU (no threshold)."""
    if ious.size == 0:
        return 0.0
    rows, cols = linear_sum_assignment(ious, maximize=True)
    return float(ious[rows, cols].sum())
