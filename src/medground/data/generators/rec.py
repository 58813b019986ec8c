"""REC (referring expression comprehension): name -> every instance of that structure, grounded.

A structure with more than ``TaskConfig.max_boxes`` instances (hundreds of nuclei) is never asked by
REC, since its answer would carry hundreds of boxes; its instances are asked one at a time by ROC and
REG instead. Negatives ask REC-style about a structure from ``absent`` and answer that it is not in
the image; an absent name equal (by :func:`name_key`) to a present structure is never used.
"""

from __future__ import annotations

import random

from medground.data.generators.base import (
    TaskState,
    Turn,
    choose_structure,
    fill,
    load_phrases,
    name_words,
    structure_groups,
)
from medground.names import clean_name, name_key

__all__ = ["absent_candidates", "negative_turn", "rec_turn"]


def rec_turn(state: TaskState, rng: random.Random) -> Turn | None:
    """Ask for one structure by name; the answer grounds all its instances (in region order)."""
    groups = structure_groups(state.regions)
    eligible = [k for k, idx in groups.items() if len(idx) <= state.config.max_boxes]
    key = choose_structure(rng, eligible, "rec", state.used)
    if key is None:
        return None
    indices = groups[key]
    first = state.regions[indices[0]]
    boxes = [state.regions[i].box for i in indices]
    grounding = state.dialect.ground(first.name, boxes, state.ctx.width, state.ctx.height)
    bank = load_phrases()["rec"]
    words = name_words(first.name)
    question = fill(rng.choice(bank["questions"]), **words)
    if len(indices) == 1:
        answer = fill(
            rng.choice(bank["answers"]),
            grounding=grounding,
            position=first.position or "in this image",
            **words,
        )
    else:
        answer = fill(rng.choice(bank["answers_multi"]), grounding=grounding, count=len(indices), **words)
    state.used.add(("rec", key))
    return Turn("rec", question, answer, list(indices), first.name)


def _safe_key(raw: str) -> str | None:
    try:
        return name_key(raw)
    except ValueError:
        return None


def absent_candidates(state: TaskState) -> dict[str, str]:
    """name_key -> clean name of each usable absent structure (none that matches a present one)."""
    present = {_safe_key(r.name) for r in state.regions} | {_safe_key(r.key) for r in state.regions}
    found: dict[str, str] = {}
    for raw in state.absent:
        key = _safe_key(raw)
        if key is not None and key not in present and key not in found:
            found[key] = clean_name(raw)
    return dict(sorted(found.items()))


def negative_turn(state: TaskState, rng: random.Random) -> Turn | None:
    """Ask for an absent structure; the answer says it is not present. ``regions`` is empty."""
    candidates = absent_candidates(state)
    key = choose_structure(rng, list(candidates), "negative", state.used)
    if key is None:
        return None
    name = candidates[key]
    bank = load_phrases()["negative"]
    words = name_words(name)
    question = fill(rng.choice(bank["questions"]), **words)
    answer = fill(rng.choice(bank["answers"]), **words)
    state.used.add(("negative", key))
    return Turn("rec", question, answer, [], name, negative=True)
