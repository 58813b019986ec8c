"""What a scorer computes, declared once beside it: each metric's name, role, direction and format.

A scorer wraps itself with :func:`declares` and lists its metrics as :class:`MetricSpec`; every result
it returns then carries them under ``"metrics"`` (so a saved ``report.json`` describes itself), and
``fn.metrics`` holds them for code that has no result yet. Reports, plots and tables read only these
declarations: a metric a scorer adds shows up in the report and plots without any other edit, and
nothing outside the scorer names its headline.

Example: a scorer of short numeric answers::

    @declares(MetricSpec("accuracy", "headline"), MetricSpec("mae", direction="lower"))
    def strict_number(rows, task, config) -> dict: ...
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ROLES", "DIRECTIONS", "MetricSpec", "declared", "declares", "headline", "in_group"]

ROLES: tuple[str, ...] = ("headline", "secondary")
DIRECTIONS: tuple[str, ...] = ("higher", "lower")


@dataclass(frozen=True)
class MetricSpec:
    """One metric a scorer reports.

    name: its key in the scorer's result (``"f1@0.5"``). role: ``headline`` (one per scorer: the per-task
    plot, the first table) or ``secondary``. direction: ``higher`` or ``lower`` is better. digits:
    decimals shown in tables. group: the table it is shown in (``"IoU >= 0.25"``); "" is the headline's.
    """

    name: str
    role: str = "secondary"
    direction: str = "higher"
    digits: int = 4
    group: str = ""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"metric {self.name!r}: role {self.role!r} is not one of {ROLES}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"metric {self.name!r}: direction {self.direction!r} is not one of {DIRECTIONS}")
        if not 0 <= self.digits <= 12:
            raise ValueError(f"metric {self.name!r}: digits must be in 0..12, got {self.digits}")

    @property
    def arrow(self) -> str:
        """``↑`` when higher is better, ``↓`` when lower is."""
        return "↑" if self.direction == "higher" else "↓"


def _checked(specs: Iterable[MetricSpec]) -> tuple[MetricSpec, ...]:
    specs = tuple(specs)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(
            f"metric names declared twice: {sorted(n for n in set(names) if names.count(n) > 1)}"
        )
    heads = [s.name for s in specs if s.role == "headline"]
    if len(heads) != 1:
        raise ValueError(f"a scorer declares exactly one headline metric, found {heads} among {names}")
    return specs


def declares(*specs: MetricSpec) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Decorator: the scorer's results carry ``specs`` under ``"metrics"``; ``fn.metrics`` is ``specs``.

    Raises ValueError at import when a name is declared twice or the headline is not exactly one.
    """
    checked = _checked(specs)

    def wrap(fn: Callable[..., dict]) -> Callable[..., dict]:
        @functools.wraps(fn)
        def scorer(*args: Any, **kwargs: Any) -> dict:
            return {**fn(*args, **kwargs), "metrics": [asdict(s) for s in checked]}

        scorer.metrics = checked  # type: ignore[attr-defined]
        return scorer

    return wrap


def declared(result: dict) -> tuple[MetricSpec, ...]:
    """The metrics a scorer's result declares (empty for a result from before declarations)."""
    return tuple(MetricSpec(**spec) for spec in result.get("metrics", ()))


def headline(result: dict) -> MetricSpec | None:
    """The declared headline metric of a result, or None when it declares none."""
    return next((m for m in declared(result) if m.role == "headline"), None)


def in_group(result: dict) -> dict[str, list[MetricSpec]]:
    """Declared metrics by table: group name -> metrics in declaration order, the headline's group first;
    a metric with no group joins the headline's."""
    head = headline(result)
    first = head.group if head else ""
    groups: dict[str, list[MetricSpec]] = {first: []}
    for spec in declared(result):
        groups.setdefault(spec.group or first, []).append(spec)
    return {name: specs for name, specs in groups.items() if specs}
