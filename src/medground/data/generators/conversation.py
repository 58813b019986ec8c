"""Multi-turn conversations that mix the tasks of :data:`medground.tasks.TASKS`, as Med-GRIT-270k
trains on them. Which task is whole-image (MIA) and which has a negative form (REC) is read from the
registry; the generators are resolved from their ``"module:function"`` names there.

Rules (the engine relies on them):

* the turn plan has ``max_turns`` slots; with probability ``mia_rate`` (always, when whole-image tasks
  are the only ones) one slot, at a random position, is a whole-image task (MIA; uniformly one of
  them if several are enabled); the others draw uniformly from the other tasks;
* a slot of a task with a negative form (REC) becomes a negative (absent structure) with probability
  ``negative_rate`` when ``absent`` offers a name that is not present;
* within a conversation a task never asks about the same structure twice; a slot whose task has
  nothing left falls back to the other (not whole-image) tasks in random order, then to a negative,
  and is dropped when none can fill it, so a conversation may be shorter than ``max_turns`` (or
  empty: no regions and no MIA/negatives);
* every region in ``Turn.regions`` is grounded by a box in the question (ROC/REG target) or in the
  answer (REC instances, REG's related region), in that order; MIA names all regions without boxes;
  a negative lists none;
* the same (ctx, regions, absent, dialect, rng state, config) gives the same turns.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from medground.data.generators.base import ImageContext, TaskConfig, TaskState, Turn
from medground.grounding import Dialect
from medground.tasks import TASKS, load, task_spec
from medground.types import Region

__all__ = ["get_task", "make_conversation", "plan_tasks"]

TaskFn = Callable[[TaskState, random.Random], Turn | None]


def get_task(name: str) -> TaskFn:
    """The generator registered under ``name``; an unknown name lists the known ones and the closest."""
    return load(task_spec(name).generator)


def _negative(task: str) -> TaskFn | None:
    ref = TASKS[task].negative
    return None if ref is None else load(ref)


def plan_tasks(rng: random.Random, config: TaskConfig) -> list[str]:
    """The task of each slot, e.g. ["rec", "mia", "roc", "rec"]."""
    whole = [t for t in config.tasks if TASKS[t].whole_image]
    others = [t for t in config.tasks if not TASKS[t].whole_image]
    if not others:
        return whole[:1]
    with_whole = bool(whole) and rng.random() < config.mia_rate
    plan = [rng.choice(others) for _ in range(config.max_turns - (1 if with_whole else 0))]
    if with_whole:
        plan.insert(rng.randrange(len(plan) + 1), whole[0] if len(whole) == 1 else rng.choice(whole))
    return plan


def _fill_slot(task: str, state: TaskState, rng: random.Random) -> Turn | None:
    """One turn for a slot: negative or the task itself, else the other tasks in random order."""
    negative = _negative(task)
    if negative is not None and state.absent and rng.random() < state.config.negative_rate:
        turn = negative(state, rng)
        if turn is not None:
            return turn
    turn = get_task(task)(state, rng)
    if turn is not None or TASKS[task].whole_image:
        return turn
    fallbacks = [t for t in state.config.tasks if t != task and not TASKS[t].whole_image]
    rng.shuffle(fallbacks)
    for other in fallbacks:
        turn = get_task(other)(state, rng)
        if turn is not None:
            return turn
    last = next((n for t in state.config.tasks if (n := _negative(t)) is not None), None)
    return last(state, rng) if last is not None and state.absent else None


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
