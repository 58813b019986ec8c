"""The shipped anatomical knowledge table: one neutral, textbook-style line per structure.

``knowledge/anatomy.json`` maps a normalised key (:func:`medground.names.name_key`) to an entry
with the display ``name``, ``body_region`` (one of :data:`BODY_REGIONS`), ``system``, ``kind``
("anatomy", "lesion" or "target": a radiotherapy planning volume), a one-sentence ``description``,
optional ``aliases`` (other raw names of the same structure) and an optional ``parent``: the key of
the structure it is part of (left lower lobe of the lung > left lung > both lungs; enhancing tumor >
tumor core > whole tumor), which need not be an entry itself ("rib"). Laterality is derived, not
written: "left X" is always part of "X" (left kidney > kidney). :func:`lineage` and :func:`related`
read the hierarchy, so that no negative says "no kidney" beside a left kidney. It covers every structure of the
shared test data and the label sets SA-Med2D-20M is built from (TotalSegmentator, AMOS, BraTS,
KiTS, LiTS, MSD, ACDC, HaN organs at risk, ISIC, Kvasir, DRIVE, REFUGE, HC18 ...).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from medground.choices import unknown_choice
from medground.names import name_key, singular

__all__ = [
    "BODY_REGIONS",
    "KINDS",
    "Entry",
    "canonical_body_region",
    "describe",
    "distant_structures",
    "lineage",
    "load_table",
    "lookup",
    "related",
    "related_structures",
]

BODY_REGIONS: tuple[str, ...] = (
    "head",
    "neck",
    "chest",
    "abdomen",
    "pelvis",
    "spine",
    "upper limb",
    "lower limb",
    "breast",
    "eye",
    "oral cavity",
    "skin",
    "fetus",
    "tissue",
    "whole body",
)
KINDS: tuple[str, ...] = ("anatomy", "lesion", "target")

_REGION_ALIASES: dict[str, str] = {
    "brain": "head",
    "head and neck": "neck",
    "thorax": "chest",
    "lung": "chest",
    "heart": "chest",
    "cardiac": "chest",
    "abdominal": "abdomen",
    "abdomen and pelvis": "abdomen",
    "retina": "eye",
    "fundus": "eye",
    "teeth": "oral cavity",
    "dental": "oral cavity",
    "mouth": "oral cavity",
    "cell": "tissue",
    "cells": "tissue",
    "histology": "tissue",
    "colon": "abdomen",
    "colorectum": "abdomen",
    "knee": "lower limb",
    "leg": "lower limb",
    "arm": "upper limb",
    "obstetric": "fetus",
    "fetal": "fetus",
    "fetal head": "fetus",
    "pregnancy": "fetus",
    "uterus": "pelvis",
    "prostate": "pelvis",
    "cervical spine": "spine",
    "lumbar spine": "spine",
    "body": "whole body",
}


# Regions that can share an image with a region (so their structures may be visible but unannotated),
# as written; :data:`_NEIGHBOURS` is this table made symmetric (a region that can share an image with
# another can share it both ways: fetus lists abdomen, so abdomen has fetus).
_WRITTEN_NEIGHBOURS: dict[str, frozenset[str]] = {
    "head": frozenset({"neck", "eye", "oral cavity", "spine"}),
    "neck": frozenset({"head", "chest", "spine", "oral cavity", "upper limb"}),
    "chest": frozenset({"neck", "abdomen", "spine", "upper limb", "breast"}),
    "abdomen": frozenset({"chest", "pelvis", "spine"}),
    "pelvis": frozenset({"abdomen", "spine", "lower limb", "fetus"}),
    "spine": frozenset({"head", "neck", "chest", "abdomen", "pelvis"}),
    "upper limb": frozenset({"chest", "neck"}),
    "lower limb": frozenset({"pelvis"}),
    "breast": frozenset({"chest"}),
    "eye": frozenset({"head"}),
    "oral cavity": frozenset({"head", "neck"}),
    "skin": frozenset(),
    "fetus": frozenset({"pelvis", "abdomen"}),
    "tissue": frozenset(),
    "whole body": frozenset(BODY_REGIONS),
}
_NEIGHBOURS: dict[str, frozenset[str]] = {
    region: near | {other for other, theirs in _WRITTEN_NEIGHBOURS.items() if region in theirs}
    for region, near in _WRITTEN_NEIGHBOURS.items()
}

# Regions where any anatomy may be in the picture: a fetus has every organ (a fetal-head ultrasound shows
# a brain, a skull, a cerebellum whatever its "obstetric" region says); a whole-body scan shows them all.
_NO_DISTANT: frozenset[str] = frozenset({"fetus", "whole body"})


@dataclass(frozen=True)
class Entry:
    """One structure of the knowledge table; ``key`` is its :func:`name_key`."""

    key: str
    name: str
    body_region: str
    system: str
    kind: str
    description: str
    aliases: tuple[str, ...] = ()
    parent: str | None = None


@lru_cache(maxsize=1)
def load_table() -> dict[str, Entry]:
    """The whole table, keyed by normalised key (read once from the package data)."""
    text = resources.files("medground.data").joinpath("knowledge/anatomy.json").read_text(encoding="utf-8")
    raw = json.loads(text)["entries"]
    return {
        key: Entry(
            key,
            e["name"],
            e["body_region"],
            e["system"],
            e["kind"],
            e["description"],
            tuple(e.get("aliases", ())),
            e.get("parent"),
        )
        for key, e in raw.items()
    }


@lru_cache(maxsize=1)
def _alias_index() -> dict[str, str]:
    """name_key of every alias -> the entry key it belongs to."""
    index: dict[str, str] = {}
    for key, entry in load_table().items():
        for alias in entry.aliases:
            index.setdefault(name_key(alias), key)
    return index


def lookup(name_or_key: str) -> Entry | None:
    """The entry for a raw key, display name or alias ("hip_left", "left hip", "postcava"), else None."""
    try:
        key = name_key(name_or_key)
    except ValueError:
        return None
    table = load_table()
    if key in table:
        return table[key]
    alias = _alias_index().get(key)
    return table[alias] if alias else None


def describe(name: str) -> str:
    """The one-line description of a structure, or "" when the table does not know it."""
    entry = lookup(name)
    return entry.description if entry else ""


def _canonical_key(name: str) -> str | None:
    """The table key of a name or alias, else of its singular ("polyps" -> "polyp", "kidneys" -> "kidney":
    a plural names the same structure), else the singular :func:`name_key` (None for an empty name)."""
    entry = lookup(name)
    if entry is not None:
        return entry.key
    try:
        key = name_key(name)
    except ValueError:
        return None
    one = " ".join(singular(word) for word in key.split())
    entry = lookup(one)
    return entry.key if entry is not None else one


@lru_cache(maxsize=4096)
def lineage(name: str) -> frozenset[str]:
    """Keys of a structure and of everything it is part of, by the table's parents and by laterality.

    "lung_lower_lobe_left" -> {"left lower lobe of the lung", "lower lobe of the lung", "left lung",
    "lung"'s entry "both lungs"}; a name the table does not know still gets its side-free form
    ("left widget" -> {"left widget", "widget"}). Empty for an empty name.
    """
    start = _canonical_key(name)
    if start is None:
        return frozenset()
    found, stack = {start}, [start]
    while stack:
        key = stack.pop()
        entry = load_table().get(key)
        ups = [entry.parent] if entry and entry.parent else []
        side, _, rest = key.partition(" ")
        if side in ("left", "right") and rest:
            ups.append(rest)
        for up in ups:
            canonical = _canonical_key(up)
            if canonical is not None and canonical not in found:
                found.add(canonical)
                stack.append(canonical)
    return frozenset(found)


def related(a: str, b: str) -> bool:
    """Whether one structure is the other, part of it, or contains it ("kidney" and "left kidney"), in
    either number ("kidneys" and "left kidney", "ribs" and "rib_left_1", "polyps" and "polyp")."""
    key_a, key_b = _canonical_key(a), _canonical_key(b)
    if key_a is None or key_b is None:
        return False
    return key_a in lineage(b) or key_b in lineage(a)


def canonical_body_region(region: str) -> str:
    """A body region name from :data:`BODY_REGIONS` ("thorax" -> "chest"); ValueError listing them if unknown."""
    text = " ".join(region.lower().replace("_", " ").split())
    if text in BODY_REGIONS:
        return text
    if text in _REGION_ALIASES:
        return _REGION_ALIASES[text]
    raise ValueError(
        unknown_choice("body region", text, [*BODY_REGIONS, *_REGION_ALIASES], listed=BODY_REGIONS)
    )


def related_structures(body_region: str, kind: str | None = None) -> list[str]:
    """Display names of the table's structures in a body region, sorted.

    ``kind`` restricts to "anatomy", "lesion" or "target". The region may be an alias ("thorax").
    Careful with negatives: a structure of the image's own region may be visible but unannotated, so
    only a dataset's own annotated vocabulary, or :func:`distant_structures`, is safe to call absent.
    """
    region = canonical_body_region(body_region)
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    return sorted(
        e.name for e in load_table().values() if e.body_region == region and (kind is None or e.kind == kind)
    )


def _regions_in(text: str) -> set[str]:
    """Canonical regions named in free text such as "abdomen, thorax and pelvis"; unknown parts ignored."""
    found = set()
    for part in re.split(r",|\band\b|/|;", text.lower()):
        try:
            found.add(canonical_body_region(part))
        except ValueError:
            continue
    return found


def distant_structures(body_region: str | None, kind: str | None = None) -> list[str]:
    """Display names of structures that cannot appear in an image of ``body_region``: safe negatives.

    Structures of the same or a neighbouring region are left out (they may be visible but not
    annotated, so "not present" could be false), as are "whole body" ones and "tissue" ones (cells,
    nuclei and glands are in every organ: a colon biopsy has nuclei whatever its region says). The region may be free
    text ("abdomen, thorax and pelvis"); an unknown or missing region gives [] (nothing is safe).
    """
    return list(_distant(body_region, kind))


@lru_cache(maxsize=256)
def _distant(body_region: str | None, kind: str | None) -> tuple[str, ...]:
    regions = _regions_in(body_region) if body_region else set()
    if not regions or regions & _NO_DISTANT:
        return ()
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    near = regions.union(*(_NEIGHBOURS[r] for r in regions)) | {"whole body", "tissue"}
    return tuple(
        sorted(
            e.name
            for e in load_table().values()
            if e.body_region not in near and (kind is None or e.kind == kind)
        )
    )
