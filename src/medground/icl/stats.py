"""Hierarchical bootstrap for in-context segmentation scores: resample targets, then patients within each.

A score of the evaluation is the mean over targets (segmentation tasks) of each target's mean over its
rows; a target's rows belong to query patients. Two sources of chance move it: which targets were
scored (target-to-target variance, usually the larger) and which patients each target happened to
have. One replicate therefore draws T targets with replacement from the T scored, and for every drawn
target (each draw apart, so a target drawn twice gets two independent patient draws) its P patients
with replacement; the replicate's score is the mean over the drawn targets of their row means.

:class:`Resamples` fixes every draw once, so all methods and k are scored on the same resamples and
their differences are paired.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Resamples", "hierarchical_interval"]


@dataclass(frozen=True)
class Resamples:
    """Fixed draws for ``replicates`` replicates over targets with ``patients[t]`` patients each.

    ``targets``: (B, T) int, the target drawn into each slot j of each replicate b; ``weights[t]``: (S_t, P_t)
    int, for each of the S_t slots holding target t (in row-major order of ``targets == t``), how often each
    of its patients is drawn. Memory grows with B x T x mean(P), not with T x B x T x P.
    """

    targets: np.ndarray
    weights: tuple[np.ndarray, ...]

    @classmethod
    def draw(cls, patients: Sequence[int], replicates: int, seed: int) -> Resamples:
        """Draws for targets with ``patients[t]`` (>= 1) patients each, from numpy's default_rng(seed)."""
        if any(p < 1 for p in patients):
            raise ValueError(f"every target needs at least one patient, got counts {list(patients)}")
        rng = np.random.default_rng(seed)
        n = len(patients)
        targets = rng.integers(0, n, size=(replicates, n))
        weights = []
        for t, p in enumerate(patients):
            draws = rng.integers(0, p, size=(replicates, n, p))[targets == t]  # (S_t, p): t's slots only
            weights.append(_counts(draws, p))
        return cls(targets, tuple(weights))

    def scores(self, sums: Sequence[np.ndarray], sizes: Sequence[np.ndarray]) -> np.ndarray:
        """(B,) replicate scores: mean over drawn targets of (drawn patients' summed values / their row count).

        ``sums[t]``, ``sizes[t]``: (P_t,) per-patient sum of the values and number of rows of target t.
        """
        per_slot = np.empty(self.targets.shape)  # (B, T): the score of the target drawn into each slot
        for t, (w, s, c) in enumerate(zip(self.weights, sums, sizes, strict=True)):
            per_slot[self.targets == t] = (w @ np.asarray(s, dtype=float)) / np.maximum(
                w @ np.asarray(c, dtype=float), 1
            )
        return per_slot.mean(axis=1)


def hierarchical_interval(
    sums: Sequence[np.ndarray], sizes: Sequence[np.ndarray], resamples: Resamples, level: float = 0.95
) -> tuple[float, float]:
    """(low, high) percentile interval of the mean over targets, targets and patients resampled.

    ``sums[t]``, ``sizes[t]``: (P_t,) per-patient sum of values and row count of target t, in the order
    the ``resamples`` were drawn for.
    """
    stats = resamples.scores(sums, sizes)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1.0 - alpha))


def _counts(draws: np.ndarray, p: int) -> np.ndarray:
    """(S, p) draws of patient numbers 0..p-1 -> (S, p) how often each patient was drawn in each row."""
    rows = draws.shape[0]
    flat = draws + p * np.arange(rows)[:, None]
    return np.bincount(flat.ravel(), minlength=rows * p).reshape(rows, p)
