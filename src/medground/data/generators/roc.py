"""ROC (referring object classification): a box pointing at one instance -> the structure's name.

The question carries the instance's box (from the dialect); the answer names the structure without a
box. Structures are chosen uniformly (not instances), then one instance of it uniformly.
"""

from __future__ import annotations

import random

from medground.data.generators.base import (
    TaskState,
    Turn,
    fill,
    load_phrases,
    name_words,
    pick_instance,
)

__all__ = ["roc_turn"]


def roc_turn(state: TaskState, rng: random.Random) -> Turn | None:
    """Point at one instance with ``dialect.box`` and answer with its name; ``regions`` = [that instance]."""
    picked = pick_instance(state, rng, "roc")
    if picked is None:
        return None
    key, _, index = picked
    region = state.regions[index]
    bank = load_phrases()["roc"]
    box = state.dialect.box(region.box, state.ctx.width, state.ctx.height)
    question = fill(rng.choice(bank["questions"]), box=box)
    answer = fill(rng.choice(bank["answers"]), **name_words(region.name))
    state.used.add(("roc", key))
    return Turn("roc", question, answer, [index], region.name)
