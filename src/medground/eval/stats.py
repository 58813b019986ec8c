"""Per-group, micro and macro aggregation of per-item counts, with percentile-bootstrap intervals.

A metric is a function of column *sums* (numpy arrays, so one call scores many bootstrap replicates);
it returns NaN where it is undefined (a zero denominator), which is reported as ``null``, never 0.

The bootstrap resamples *units* (images or patients), each with all its items, not items: the turns
asked about one image are correlated, and resampling them one by one gives intervals that are too
narrow. :class:`Units` says which unit each item belongs to; without one, each item is its own unit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BootstrapConfig",
    "Metric",
    "Units",
    "aggregate",
    "bootstrap_ci",
    "describe_bootstrap",
    "safe_div",
]

Metric = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class BootstrapConfig:
    """Percentile bootstrap over resampling units (images or patients, see :class:`Units`)."""

    replicates: int = 1000
    """number of resamples; 0 turns intervals off"""
    level: float = 0.95
    """coverage of the interval"""
    seed: int = 0
    """seed of numpy's default_rng, so reports are reproducible"""


@dataclass(frozen=True, eq=False)
class Units:
    """The resampling unit of every item: ``index`` (N,) int in 0..K-1, numbered in order of first
    appearance, and ``name``, what a unit is ("image", "patient", ...), for the report."""

    index: np.ndarray
    name: str

    @classmethod
    def of(cls, keys: Sequence[str], name: str) -> Units:
        """Units from one key per item (items with equal keys form one unit)."""
        numbers: dict[str, int] = {}
        return cls(np.asarray([numbers.setdefault(k, len(numbers)) for k in keys], dtype=np.int64), name)

    @property
    def count(self) -> int:
        """K, the number of distinct units."""
        return int(self.index.max()) + 1 if self.index.size else 0


def safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, NaN where den == 0."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den != 0)


def _value(x: np.ndarray | float) -> float | None:
    value = float(x)
    return None if np.isnan(value) else value


def bootstrap_ci(
    columns: dict[str, np.ndarray], metric: Metric, config: BootstrapConfig, units: Units | None = None
) -> list[float] | None:
    """[low, high] interval of ``metric`` over units resampled with replacement; None if undefined.

    columns: {name: (N,) per-item values}; all the same length N. units: the unit of each item (default:
    each item its own unit). A replicate draws K units with replacement and sums the columns over all
    items of the drawn units, so the items of one unit always travel together.
    """
    n = len(next(iter(columns.values()))) if columns else 0
    if config.replicates <= 0 or n == 0:
        return None
    index = np.arange(n) if units is None else units.index
    if len(index) != n:
        raise ValueError(f"{len(index)} unit labels for {n} items")
    k = int(index.max()) + 1
    per_unit = {
        name: np.bincount(index, np.asarray(v, dtype=float), minlength=k) for name, v in columns.items()
    }
    rng = np.random.default_rng(config.seed)
    chunk = max(1, 2_000_000 // k)
    values = []
    for start in range(0, config.replicates, chunk):
        idx = rng.integers(0, k, size=(min(chunk, config.replicates - start), k))
        sums = {name: v[idx].sum(axis=1) for name, v in per_unit.items()}
        values.append(metric(sums))
    stats = np.concatenate(values)
    stats = stats[~np.isnan(stats)]
    if stats.size == 0:
        return None
    alpha = (1.0 - config.level) / 2.0
    return [float(np.quantile(stats, alpha)), float(np.quantile(stats, 1.0 - alpha))]


def describe_bootstrap(config: BootstrapConfig, units: Units | None, items: int) -> dict:
    """What the intervals resampled, for the report: unit name, unit and item counts, replicates, level."""
    return {
        "unit": "item" if units is None else units.name,
        "units": items if units is None else units.count,
        "items": items,
        "replicates": config.replicates,
        "level": config.level,
    }


def aggregate(
    columns: dict[str, np.ndarray],
    groups: list[str],
    metrics: dict[str, Metric],
    config: BootstrapConfig,
    units: Units | None = None,
) -> dict:
    """Scores per group (modality), micro (items pooled) and macro (mean of defined group scores).

    Returns ``{"per_group": {g: {metric: v}}, "micro": {...}, "macro": {...}, "ci": {metric: [lo, hi]}}``
    (intervals are for the micro scores, resampling ``units``), ``"n": {g: items}`` and ``"bootstrap"``
    (:func:`describe_bootstrap`).
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
        "ci": {m: bootstrap_ci(columns, fn, config, units) for m, fn in metrics.items()},
        "bootstrap": describe_bootstrap(config, units, len(groups)),
        "n": {g: int((groups_arr == g).sum()) for g in names},
    }
