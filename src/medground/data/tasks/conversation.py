"""Multi-turn conversations that mix the four tasks, as Med-GRIT-270k trains on them.

Rules (the engine relies on them):

* the turn plan has ``max_turns`` slots; with probability ``mia_rate`` (always, when "mia" is the only
  task) one slot, at a random position, is MIA; the others draw uniformly from the other tasks;
* a REC slot becomes a negative (absent structure) with probability ``negative_rate`` when ``absent``
  offers a name that is not present;
* within a conversation a task never asks about the same structure twice; a slot whose task has
  nothing left falls back to the other tasks in random order, and is dropped when none can fill it,
  so a conversation may be shorter than ``max_turns`` (or empty: no regions and no MIA/negatives);
* every region in ``Turn.regions`` is grounded by a box in the question (ROC/REG target) or in the
  answer (REC instances, REG's related region), in that order; MIA names all regions without boxes;
  a negative lists none;
* the same (ctx, regions, absent, dialect, rng state, config) gives the same turns.
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Callable

from medground.data.tasks.base import ImageContext, TaskConfig, TaskState, Turn
from medground.data.tasks.mia import mia_turn
from medground.data.tasks.rec import negative_turn, rec_turn
from medground.data.tasks.reg import reg_turn
from medground.data.tasks.roc import roc_turn
from medground.grounding import Dialect
from medground.types import Region

__all__ = ["TASKS", "get_task", "make_conversation", "plan_tasks"]

TaskFn = Callable[[TaskState, random.Random], Turn | None]

TASKS: dict[str, TaskFn] = {"rec": rec_turn, "roc": roc_turn, "reg": reg_turn, "mia": mia_turn}


def get_task(name: str) -> TaskFn:
    """The generator registered under ``name``; an unknown name lists the known ones and the closest."""
    if name in TASKS:
        return TASKS[name]
    close = difflib.get_close_matches(name, list(TASKS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise KeyError(f"unknown task {name!r}; known: {', '.join(TASKS)}.{hint}")


def plan_tasks(rng: random.Random, config: TaskConfig) -> list[str]:
    """The task of each slot, e.g. ["rec", "mia", "roc", "rec"]."""
    others = [t for t in config.tasks if t != "mia"]
    if not others:
        return ["mia"]
    with_mia = "mia" in config.tasks and rng.random() < config.mia_rate
    plan = [rng.choice(others) for _ in range(config.max_turns - (1 if with_mia else 0))]
    if with_mia:
        plan.insert(rng.randrange(len(plan) + 1), "mia")
    return plan


def _fill_slot(task: str, state: TaskState, rng: random.Random) -> Turn | None:
    """One turn for a slot: negative or the task itself, else the other tasks in random order."""
    if task == "rec" and state.absent and rng.random() < state.config.negative_rate:
        turn = negative_turn(state, rng)
        if turn is not None:
            return turn
    turn = TASKS[task](state, rng)
    if turn is not None or task == "mia":
        return turn
    fallbacks = [t for t in state.config.tasks if t not in (task, "mia")]
    rng.shuffle(fallbacks)
    for other in fallbacks:
        turn = TASKS[other](state, rng)
        if turn is not None:
            return turn
    return negative_turn(state, rng) if "rec" in state.config.tasks and state.absent else None


def make_conversation(
    ctx: ImageContext,
    regions: list[Region],
    absent: list[str],
    dialect: Dialect,
    rng: random.Random,
    config: TaskConfig,
) -> list[Turn]:
    """The turns of one conversation about one image (see the module rules).

    ``regions`` are the image's region instances (boxes in pixels of a ``ctx.width`` x ``ctx.height``
    image); ``absent`` are structure names (raw or clean) known not to be in the image.
    """
    state = TaskState(ctx, list(regions), list(absent), dialect, config)
    turns = []
    for task in plan_tasks(rng, config):
        turn = _fill_slot(task, state, rng)
        if turn is not None:
            turns.append(turn)
    return turns
