"""Shared types and helpers of the task generators: configs, image context, turns, phrasing.

Grounding text comes only from a :class:`medground.grounding.Dialect`; this module only fills the
phrasing templates of ``phrases.json`` around it.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from medground.grounding import Dialect
from medground.names import is_plural, name_key, the_name
from medground.tasks import TASKS, default_tasks, task_names, unknown_tasks_message
from medground.types import Region, Turn

__all__ = [
    "ImageContext",
    "TaskConfig",
    "TaskState",
    "Turn",
    "choose_structure",
    "pick_instance",
    "fill",
    "load_phrases",
    "name_words",
    "structure_groups",
]


@dataclass(frozen=True)
class TaskConfig:
    """Which tasks a conversation mixes and how (Med-GRIT trains on multi-turn mixed conversations).

    Task names are keys of :data:`medground.tasks.TASKS`; the default is its default mix
    (:func:`medground.tasks.default_tasks`: the tasks that are not opt-in, in registry order).
    """

    tasks: tuple[str, ...] = field(default_factory=default_tasks)  # which tasks may appear
    max_turns: int = 4  # turns per conversation (fewer when the image offers fewer distinct questions)
    negative_rate: float = 0.15  # share of REC turns (a task with negatives) about an absent structure
    mia_rate: float = 0.5  # chance that a conversation contains one whole-image (MIA) turn
    max_boxes: int = 20  # REC only asks for structures with at most this many instances (others: ROC/REG)

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise ValueError(
                unknown_tasks_message(unknown) if unknown else f"tasks is empty; pick from {task_names()}"
            )
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        if self.max_boxes < 1:
            raise ValueError(f"max_boxes must be >= 1, got {self.max_boxes}")
        for name in ("negative_rate", "mia_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")


@dataclass(frozen=True)
class ImageContext:
    """What the tasks know about the image: size in pixels of the saved image, modality and more."""

    width: int
    height: int
    modality: str
    plane: str | None
    body_region: str | None
    source: str


@dataclass
class TaskState:
    """Everything a task generator reads, plus the (task, target) pairs already asked in this conversation."""

    ctx: ImageContext
    regions: list[Region]
    absent: list[str]
    dialect: Dialect
    config: TaskConfig
    used: set[tuple[str, str]] = field(default_factory=set)


@lru_cache(maxsize=1)
def load_phrases() -> dict:
    """The phrasing bank shipped as ``medground/data/generators/phrases.json``."""
    text = resources.files("medground.data.generators").joinpath("phrases.json").read_text(encoding="utf-8")
    return json.loads(text)


def name_words(name: str) -> dict[str, str]:
    """Template values for a structure name with article and verb agreement ("both lungs" -> are)."""
    plural = is_plural(name)
    definite = the_name(name)
    article = definite[: len(definite) - len(name)]
    return {
        "name": name,
        "the_name": definite,
        "The_name": definite[0].upper() + definite[1:],
        "the": article,
        "The": article.capitalize(),
        "is": "are" if plural else "is",
        "it": "they" if plural else "it",
        "It_is": "They are" if plural else "It is",
        "it_is": "they are" if plural else "it is",
        "does": "do" if plural else "does",
        "appears": "appear" if plural else "appears",
        "lies": "lie" if plural else "lies",
    }


def fill(template: str, **values: object) -> str:
    """Fill a phrasing template and tidy spacing around punctuation (values are inserted verbatim)."""
    text = template.format(**values)
    text = re.sub(r" {2,}", " ", text)
    return re.sub(r" ([.,;])(?=\s|$)", r"\1", text).strip()


def structure_groups(regions: list[Region]) -> dict[str, list[int]]:
    """name_key of each structure -> indices of its region instances, in the given order; keys sorted."""
    groups: dict[str, list[int]] = {}
    for index, region in enumerate(regions):
        groups.setdefault(name_key(region.name), []).append(index)
    return dict(sorted(groups.items()))


def choose_structure(
    rng: random.Random, keys: list[str], task: str, used: set[tuple[str, str]]
) -> str | None:
    """A structure key not yet asked by ``task`` in this conversation, uniformly; None when all were."""
    fresh = [k for k in keys if (task, k) not in used]
    return rng.choice(fresh) if fresh else None


def pick_instance(
    state: TaskState, rng: random.Random, task: str
) -> tuple[str, dict[str, list[int]], int] | None:
    """(structure key, structure groups, one instance index) for a box-pointing task, or None when every
    structure was already asked by ``task``; the structure is chosen uniformly, then one of its instances."""
    groups = structure_groups(state.regions)
    key = choose_structure(rng, list(groups), task, state.used)
    if key is None:
        return None
    return key, groups, rng.choice(groups[key])
