"""Per-group, micro and macro aggregation of per-item counts, with percentile-bootstrap intervals.

A metric is a function of column *sums* (numpy arrays, so one call scores many bootstrap replicates);
it returns NaN where it is undefined (a zero denominator), which is reported as ``null``, never 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["BootstrapConfig", "Metric", "aggregate", "bootstrap_ci", "safe_div"]

Metric = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class BootstrapConfig:
    """Percentile bootstrap over items."""

    replicates: int = 1000
    """number of resamples; 0 turns intervals off"""
    level: float = 0.95
    """coverage of the interval"""
    seed: int = 0
    """seed of numpy's default_rng, so reports are reproducible"""


def safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, NaN where den == 0."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den != 0)


def _value(x: np.ndarray | float) -> float | None:
    value = float(x)
    return None if np.isnan(value) else value


def bootstrap_ci(
    columns: dict[str, np.ndarray], metric: Metric, config: BootstrapConfig
) -> list[float] | None:
    """[low, high] interval of ``metric`` over items resampled with replacement; None if undefined.

    columns: {name: (N,) per-item values}; all the same length N.
    """
    n = len(next(iter(columns.values()))) if columns else 0
    if config.replicates <= 0 or n == 0:
        return None
    rng = np.random.default_rng(config.seed)
    chunk = max(1, 2_000_000 // n)
    values = []
    for start in range(0, config.replicates, chunk):
        idx = rng.integers(0, n, size=(min(chunk, config.replicates - start), n))
        sums = {k: np.asarray(v, dtype=float)[idx].sum(axis=1) for k, v in columns.items()}
        values.append(metric(sums))
    stats = np.concatenate(values)
    stats = stats[~np.isnan(stats)]
    if stats.size == 0:
        return None
    alpha = (1.0 - config.level) / 2.0
    return [float(np.quantile(stats, alpha)), float(np.quantile(stats, 1.0 - alpha))]


def aggregate(
    columns: dict[str, np.ndarray], groups: list[str], metrics: dict[str, Metric], config: BootstrapConfig
) -> dict:
    """Scores per group (modality), micro (items pooled) and macro (mean of defined group scores).

    Returns ``{"per_group": {g: {metric: v}}, "micro": {...}, "macro": {...}, "ci": {metric: [lo, hi]}}``
    (intervals are for the micro scores) and ``"n": {g: items}``.
    """
    groups_arr = np.asarray(groups, dtype=object)
    names = sorted(set(groups))
    totals = {k: np.asarray(v, dtype=float).sum() for k, v in columns.items()}
    per_group = {}
    for g in names:
        mask = groups_arr == g
        sums = {k: np.asarray(v, dtype=float)[mask].sum() for k, v in columns.items()}
        per_group[g] = {m: _value(fn(sums)) for m, fn in metrics.items()}
    macro = {}
    for m in metrics:
        defined = [s[m] for s in per_group.values() if s[m] is not None]
        macro[m] = float(np.mean(defined)) if defined else None
    return {
        "per_group": per_group,
        "micro": {m: _value(fn(totals)) for m, fn in metrics.items()},
        "macro": macro,
        "ci": {m: bootstrap_ci(columns, fn, config) for m, fn in metrics.items()},
        "n": {g: int((groups_arr == g).sum()) for g in names},
    }
