"""COUNT: "How many cell nuclei are there?" -> the number of the structure's instances in the record.

The count is the data engine's: the regions of that structure the record holds (connected components,
or an instance map's instances, after specks are dropped), so the answer is checked against the same
regions every other task names. The turn names the structure and all its instances and holds no box.
Opt-in (``build --tasks rec,roc,reg,mia,count``): it is not in the default task mix. Scored by the
strict protocol's :func:`medground.eval.strict.strict_number` (BiRD has no counting task).
"""

from __future__ import annotations

import random

from medground.data.generators.base import TaskState, Turn, choose_structure, fill, structure_groups
from medground.names import is_plural, plural

__all__ = ["count_turn"]

QUESTIONS: tuple[str, ...] = (
    "How many {names} are there?",
    "How many {names} are there in this image?",
    "How many {names} can you see?",
    "How many {names} are visible?",
    "Count the {names} in this image.",
    "Count the {names}.",
    "What is the number of {names} in this image?",
    "How many separate {names} does this image show?",
)
"""Question templates; ``{names}`` is the structure's plural ("cell nuclei", "polyps")."""


def _answer(name: str, count: int) -> str:
    """ "There are 3 polyps." / "There is 1 polyp."; "1" alone for a plural-only name ("dental caries")."""
    if count == 1:
        return "1" if is_plural(name) else f"There is 1 {name}."
    return f"There are {count} {plural(name)}."


def count_turn(state: TaskState, rng: random.Random) -> Turn | None:
    """Ask how many instances of one structure (chosen uniformly among those not yet counted) the image
    shows; ``regions`` = all of them. None when every structure was counted in this conversation."""
    groups = structure_groups(state.regions)
    key = choose_structure(rng, list(groups), "count", state.used)
    if key is None:
        return None
    indices = groups[key]
    name = state.regions[indices[0]].name
    question = fill(rng.choice(QUESTIONS), names=plural(name))
    state.used.add(("count", key))
    return Turn("count", question, _answer(name, len(indices)), list(indices), name)
