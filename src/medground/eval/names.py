"""Structure names for the strict protocol: one canonical spelling and a small synonym table.

``canonical_name("hip_left") == "left hip"``: lower case, ``_``/``-`` as spaces, punctuation dropped,
``left``/``right`` moved to the front, plurals folded word by word (``kidneys`` -> ``kidney``,
``arteries`` -> ``artery``, ``vertebrae`` -> ``vertebra``). Two names are the same class when their
canonical forms are equal or listed together in :data:`SYNONYMS`.
"""

from __future__ import annotations

import re

__all__ = ["SYNONYMS", "canonical_name", "class_mentioned", "fold_plural", "name_forms"]

_IRREGULAR = {
    "vertebrae": "vertebra",
    "teeth": "tooth",
    "bronchi": "bronchus",
    "feet": "foot",
    "metastases": "metastasis",
    "diagnoses": "diagnosis",
    "phalanges": "phalanx",
    "cortices": "cortex",
}
_KEEP = ("ss", "us", "is", "as")
_SIDES = ("left", "right")

SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("left hip", "left femoral head", "left femur head"),
    ("right hip", "right femoral head", "right femur head"),
    ("tumor", "tumour", "neoplasm"),
    ("esophagus", "oesophagus"),
    ("colon", "large intestine", "large bowel"),
    ("small bowel", "small intestine"),
    ("inferior vena cava", "ivc"),
    ("gallbladder", "gall bladder"),
    ("bladder", "urinary bladder"),
    ("adrenal gland", "suprarenal gland"),
    ("left adrenal gland", "left suprarenal gland"),
    ("right adrenal gland", "right suprarenal gland"),
    ("prostate", "prostate gland"),
    ("optic disc", "optic disk"),
    ("myocardium", "heart muscle"),
    ("left ventricle", "lv"),
    ("right ventricle", "rv"),
    ("uterus", "womb"),
    ("edema", "oedema"),
    ("hemorrhage", "haemorrhage"),
)
"""Groups of canonical names that denote one class. Extend here; keep entries canonical."""

SYNONYMS: dict[str, frozenset[str]] = {name: frozenset(group) for group in SYNONYM_GROUPS for name in group}


def fold_plural(word: str) -> str:
    """Singular of one lower-case word by a few English rules (``ies``->``y``, ``ches``->``ch``, ``s``)."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "uses", "xes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(_KEEP):
        return word[:-1]
    return word


def _words(text: str) -> list[str]:
    return [fold_plural(w) for w in re.findall(r"[a-z0-9]+", text.lower().replace("_", " "))]


def canonical_name(name: str) -> str:
    """Canonical spelling of a structure name: ``"Hip_Left"`` -> ``"left hip"``, ``"Kidneys"`` -> ``"kidney"``."""
    words = _words(name)
    sides = [w for w in words if w in _SIDES]
    rest = [w for w in words if w not in _SIDES]
    return " ".join(sides[:1] + rest)


def name_forms(name: str) -> frozenset[str]:
    """The canonical name and its synonyms."""
    canonical = canonical_name(name)
    return SYNONYMS.get(canonical, frozenset()) | {canonical}


def class_mentioned(reference: str, response: str) -> bool:
    """True when ``response`` names the class ``reference`` (or a synonym) as whole words.

    The whole response may be just the name in another spelling (``"hip_left"`` for "left hip"),
    or contain a canonical form as a run of whole words (``"This is the left hip."``); a word
    inside another word (``liver`` in ``deliver``) does not count.
    """
    forms = name_forms(reference)
    if canonical_name(response) in forms:
        return True
    padded = " " + " ".join(_words(response)) + " "
    return any(f" {form} " in padded for form in forms if form)
