"""REG (referring expression generation): a box pointing at one instance -> a description.

The answer gives the name and position, how many instances the structure has when more than one,
its relation to one instance of another structure (grounded with the dialect, so that region is in
``Turn.regions`` too) and the knowledge table's one-line, general description of the structure.
The relation comes from :func:`medground.data.regions.relation_phrase`; if that module cannot be
imported the relation sentence is left out.
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
from medground.data.knowledge import describe
from medground.data.regions import relation_phrase

__all__ = ["reg_turn"]


def _relation_sentence(
    state: TaskState, rng: random.Random, groups: dict[str, list[int]], key: str, index: int
) -> tuple[str, int | None]:
    """A sentence relating region ``index`` to one instance of another structure, and that instance."""
    others = [k for k in groups if k != key]
    if not others:
        return "", None
    other_index = rng.choice(groups[rng.choice(others)])
    target, other = state.regions[index], state.regions[other_index]
    relation = relation_phrase(target, other)
    grounded = state.dialect.ground(other.name, [other.box], state.ctx.width, state.ctx.height)
    words = name_words(target.name)
    template = rng.choice(load_phrases()["reg"]["relations"])
    sentence = fill(
        template,
        relation=relation,
        other=grounded,
        the=name_words(other.name)["the"],
        It_is=words["It_is"],
        it_is=words["it_is"],
    )
    return sentence, other_index


def reg_turn(state: TaskState, rng: random.Random) -> Turn | None:
    """Point at one instance with ``dialect.box``; answer with name, position, relation, description."""
    picked = pick_instance(state, rng, "reg")
    if picked is None:
        return None
    key, groups, index = picked
    region = state.regions[index]
    bank = load_phrases()["reg"]
    words = name_words(region.name)
    question = fill(
        rng.choice(bank["questions"]), box=state.dialect.box(region.box, state.ctx.width, state.ctx.height)
    )
    parts = [fill(rng.choice(bank["answers"]), position=region.position or "in this image", **words)]
    count = len(groups[key])
    if count > 1:
        parts.append(fill(rng.choice(bank["instances"]), count=count, **words))
    relation, other_index = _relation_sentence(state, rng, groups, key, index)
    if relation:
        parts.append(relation)
    description = describe(region.name) or describe(region.key)
    if description:
        parts.append(description)
    state.used.add(("reg", key))
    indices = [index] if other_index is None else [index, other_index]
    return Turn("reg", question, " ".join(parts), indices, region.name)
