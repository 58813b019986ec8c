"""Dataset structure keys -> natural English names, and the normalised key used to compare names.

``clean_name("lung_lower_lobe_left")`` -> "left lower lobe of the lung"; ``clean_name("RightParotid")``
-> "right parotid gland"; ``clean_name("cell nuclei (instance label map)")`` -> "cell nuclei".
Side words always mean the patient's side and come first. :func:`name_key` lowercases a clean name,
drops hyphens and punctuation and puts side words first, so differently written names of one
structure ("lower lobe of the left lung", "lung_lower_lobe_left") share one key.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["clean_name", "is_plural", "name_key", "ordinal", "the_name"]

_SIDES = {"left": "left", "right": "right", "l": "left", "r": "right", "lt": "left", "rt": "right"}
_SIDE_NOTE = re.compile(r"\(\s*(l|r|lt|rt|left|right)\s*\)", re.IGNORECASE)
_PARENTHESES = re.compile(r"\s*\([^)]*\)")
_LEVEL = re.compile(r"^[CTLS]\d{1,2}$", re.IGNORECASE)
_PTV = re.compile(r"\bPTV[\s_-]*(\d+)\b", re.IGNORECASE)
_ORDINAL_NOUNS = {"rib"}
_KEEP_CASE = {"gy": "Gy"}

# Base name (lowercase words, sides and numbers removed) -> display name.
_LEXICON: dict[str, str] = {
    "heart atrium": "atrium",
    "heart ventricle": "ventricle",
    "heart myocardium": "myocardium",
    "lung upper lobe": "upper lobe of the lung",
    "lung middle lobe": "middle lobe of the lung",
    "lung lower lobe": "lower lobe of the lung",
    "autochthon": "autochthonous back muscle",
    "clavicula": "clavicle",
    "iliac vena": "iliac vein",
    "ground glass opacity": "ground-glass opacity",
    "ground glass opacities": "ground-glass opacity",
    "ggo": "ground-glass opacity",
    "postcava": "inferior vena cava",
    "ivc": "inferior vena cava",
    "svc": "superior vena cava",
    "parotid": "parotid gland",
    "submandibular": "submandibular gland",
    "lacrimal": "lacrimal gland",
    "vertebrae": "vertebra",
    "lv": "left ventricle",
    "rv": "right ventricle",
    "la": "left atrium",
    "ra": "right atrium",
    "rag": "right adrenal gland",
    "lag": "left adrenal gland",
    "myo": "myocardium",
    "lvc": "left ventricular cavity",
    "ncr": "necrotic tumor core",
    "net": "non-enhancing tumor",
    "ed": "peritumoral edema",
    "et": "enhancing tumor",
    "wt": "whole tumor",
    "tc": "tumor core",
    "brain stem": "brainstem",
    "prostate/uterus": "prostate or uterus",
    "covid lesion": "COVID-19 lesion",
    "covid 19 lesion": "COVID-19 lesion",
    "optic chiasma": "optic chiasm",
    "bladder": "urinary bladder",
    "gall bladder": "gallbladder",
    "mask tumor": "tumor",
    "tumor mask": "tumor",
    "oesophagus": "esophagus",
    "oedema": "edema",
    "tumour": "tumor",
}
_PLURAL_WORDS = {"nuclei", "teeth", "bronchi", "alveoli", "feet", "fields", "vessels", "lungs", "caries"}
_SINGULAR_WORDS = {"lens", "pons", "iris", "pelvis", "pancreas", "iliopsoas", "thalamus", "corpus"}


def ordinal(number: int) -> str:
    """1 -> "1st", 2 -> "2nd", 11 -> "11th", 23 -> "23rd"."""
    if 10 <= number % 100 <= 20:
        return f"{number}th"
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def _tokens(raw: str) -> list[str]:
    """Split a raw key into words: side notes kept, other parentheses dropped, CamelCase and '_' split."""
    text = _SIDE_NOTE.sub(lambda m: f" {_SIDES[m.group(1).lower()]} ", raw)
    text = _PARENTHESES.sub(" ", text)
    text = _PTV.sub(lambda m: f" {m.group(1)} Gy planning target volume ", text)
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)
    return [t for t in re.split(r"[\s_,;]+", text) if t]


def _display_token(token: str) -> str:
    """Lowercase a word unless it is a vertebra level (T9), a kept unit (Gy) or a short acronym."""
    if _LEVEL.match(token):
        return token.upper()
    if token.lower() in _KEEP_CASE:
        return _KEEP_CASE[token.lower()]
    if token.isupper() and 2 <= len(token) <= 4 and token.lower() not in _SIDES and token.isalpha():
        return token
    return token.lower()


@lru_cache(maxsize=8192)
def clean_name(raw: str) -> str:
    """Natural English name for a dataset structure key or label text.

    Rules, in order: "(L)"/"(R)" become side words and any other parenthesised note is dropped;
    CamelCase and underscores split words; "left"/"right"/"L"/"R" move to the front; a vertebra level
    gives "T9 vertebra"; a rib number gives "9th rib"; known dataset bases are rewritten
    ("heart_atrium" -> "atrium", "lung_lower_lobe" -> "lower lobe of the lung").
    Raises ValueError for an empty name.
    """
    tokens = _tokens(raw)
    if not tokens:
        raise ValueError(f"cannot make a structure name from {raw!r}: it is empty after cleaning")
    sides: list[str] = []
    words: list[str] = []
    level = None
    for token in tokens:
        low = token.lower()
        if low in ("left", "right") or (low in _SIDES and len(tokens) > 1):
            if _SIDES[low] not in sides:
                sides.append(_SIDES[low])
        elif _LEVEL.match(token) and any(t.lower().startswith("vertebra") for t in tokens):
            level = token.upper()
        else:
            words.append(_display_token(token))
    numbers = [w for w in words if w.isdigit()]
    base_words = [w for w in words if not w.isdigit()]
    base = " ".join(base_words)
    lowered = base.lower()
    if level and lowered in ("vertebrae", "vertebra", ""):
        name = f"{level} vertebra"
    elif numbers and len(numbers) == 1 and lowered in _ORDINAL_NOUNS:
        name = f"{ordinal(int(numbers[0]))} {_LEXICON.get(lowered, lowered)}"
    else:
        name = _LEXICON.get(lowered) or _LEXICON.get(lowered.replace("-", " ")) or " ".join(words)
    return " ".join([*sides, name]).strip()


@lru_cache(maxsize=8192)
def name_key(raw: str) -> str:
    """Normalised comparison key: clean name, lowercase, hyphens/punctuation as spaces, sides first.

    "lower lobe of the left lung", "lung_lower_lobe_left" -> "left lower lobe of the lung".
    """
    text = clean_name(raw).lower().replace("-", " ")
    words = [w for w in re.split(r"[^a-z0-9]+", text) if w]
    sides = sorted({w for w in words if w in ("left", "right")})
    rest = [w for w in words if w not in ("left", "right")]
    if rest[:1] == ["the"]:
        rest = rest[1:]
    return " ".join([*sides, *rest])


def is_plural(name: str) -> bool:
    """Whether a clean name is grammatically plural ("both lungs", "cell nuclei"), for verb agreement."""
    words = name.lower().split()
    if not words:
        return False
    last = words[-1]
    if words[0] == "both" or last in _PLURAL_WORDS:
        return True
    if last in _SINGULAR_WORDS:
        return False
    return last.endswith("s") and not last.endswith(("ss", "us", "is", "as", "os", "ys"))


def the_name(name: str) -> str:
    """The name with its definite article where English needs one: "the liver", but "both lungs"."""
    if name.lower().startswith(("both ", "all ", "the ")):
        return name
    return f"the {name}"
