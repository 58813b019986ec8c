"""MIA (medical image analysis): the whole image -> modality, plane, body region and structures.

The answer names every structure present (with its instance count when more than one) and no
box; ``Turn.regions`` lists every region, since each is mentioned by name.
"""

from __future__ import annotations

import random

from medground.data.generators.base import TaskState, Turn, fill, load_phrases, name_words, structure_groups
from medground.modalities import image_phrase

__all__ = ["mia_turn", "region_clause", "structure_list"]

_REGION_PHRASES = {"tissue": "a tissue section", "fetus": "a fetus", "whole body": "the whole body"}


def region_clause(body_region: str | None) -> str:
    """ " of the pelvis" for a body region, "" when unknown."""
    if not body_region:
        return ""
    region = body_region.strip().lower().replace("_", " ")
    return f" of {_REGION_PHRASES.get(region, f'the {region}')}"


def structure_list(names_and_counts: list[tuple[str, int]]) -> str:
    """ "the aorta, the liver and the left hip (2 instances)"."""
    items = [name_words(n)["the_name"] + (f" ({c} instances)" if c > 1 else "") for n, c in names_and_counts]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def mia_turn(state: TaskState, rng: random.Random) -> Turn | None:
    """Analyse the whole image once per conversation; ``regions`` = all region indices."""
    if ("mia", "image") in state.used:
        return None
    groups = structure_groups(state.regions)
    ordered = sorted(groups.values(), key=lambda idx: idx[0])
    named = [(state.regions[idx[0]].name, len(idx)) for idx in ordered]
    bank = load_phrases()["mia"]
    image = image_phrase(state.ctx.modality, state.ctx.plane)
    values = {
        "image": image,
        "Image": image[0].upper() + image[1:],
        "region_clause": region_clause(state.ctx.body_region),
    }
    question = rng.choice(bank["questions"])
    if named:
        answer = fill(rng.choice(bank["answers"]), structures=structure_list(named), **values)
    else:
        answer = fill(rng.choice(bank["answers_empty"]), **values)
    state.used.add(("mia", "image"))
    return Turn("mia", question, answer, list(range(len(state.regions))), None)
