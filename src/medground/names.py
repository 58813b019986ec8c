"""Structure names, once for every room (ground floor: imports nothing of ours).

Four things live here, each once:

- :func:`clean_name`: a dataset structure key -> the natural English name the data engine writes
  (``"lung_lower_lobe_left"`` -> "left lower lobe of the lung", ``"RightParotid"`` -> "right parotid gland").
- :func:`name_key` and :func:`canonical_name`: comparison keys built by one rule (lower-case words,
  punctuation dropped, side words first, a leading "the" dropped). ``name_key`` keys a dataset name
  after :func:`clean_name` (knowledge table, negatives); ``canonical_name`` keys free text as a model
  writes it (strict protocol) and folds plurals, so "Kidneys" and "kidney" are one class.
- :func:`singular`, :func:`plural` and :func:`is_plural`: one plural table (irregular plurals,
  plural-only words, singular words ending in s) behind singularising a word, pluralising a name and
  verb agreement of a name.
- :data:`SYNONYM_GROUPS`: canonical names that denote one class under the strict protocol.

:func:`icl_key` is a compatibility path, not a normaliser to reuse: it reproduces exactly the task keys
the shipped in-context segmentation weights list. The in-context segmenter's prompt text is
:func:`clean_name`, so both of its task readers and the data engine write one text (until 2026-12-01 it
had its own rule, which left CamelCase keys glued: "leftparotid", "ptv56"; the shipped RidgeSeg weights
were trained with those strings for the sa_med2d and OpenKBP tasks).
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = [
    "SYNONYMS",
    "SYNONYM_GROUPS",
    "canonical_name",
    "class_mentioned",
    "clean_name",
    "icl_key",
    "is_plural",
    "name_forms",
    "name_key",
    "mention_words",
    "ordinal",
    "plural",
    "singular",
    "the_name",
]

# ---- display names (clean_name) ------------------------------------------------------------------

_SIDES = {"left": "left", "right": "right", "l": "left", "r": "right", "lt": "left", "rt": "right"}
_SIDE_WORDS = ("left", "right")
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
    ("heart_atrium" -> "atrium", "lung_lower_lobe" -> "lower lobe of the lung"). Side words always
    mean the patient's side. Raises ValueError for an empty name.
    """
    tokens = _tokens(raw)
    if not tokens:
        raise ValueError(f"cannot make a structure name from {raw!r}: it is empty after cleaning")
    sides: list[str] = []
    words: list[str] = []
    level = None
    for token in tokens:
        low = token.lower()
        if low in _SIDE_WORDS or (low in _SIDES and len(tokens) > 1):
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


def the_name(name: str) -> str:
    """The name with its definite article where English needs one: "the liver", but "both lungs"."""
    if name.lower().startswith(("both ", "all ", "the ")):
        return name
    return f"the {name}"


# ---- number: one plural table --------------------------------------------------------------------

_IRREGULAR_PLURALS: dict[str, str] = {
    "vertebrae": "vertebra",
    "teeth": "tooth",
    "feet": "foot",
    "bronchi": "bronchus",
    "nuclei": "nucleus",
    "alveoli": "alveolus",
    "metastases": "metastasis",
    "diagnoses": "diagnosis",
    "phalanges": "phalanx",
    "cortices": "cortex",
    "vertices": "vertex",
    "apices": "apex",
    "lenses": "lens",
    "irises": "iris",
    "testes": "testis",
    "ganglia": "ganglion",
    "foramina": "foramen",
}
"""Plural -> singular where no suffix rule applies."""
_PLURAL_ONLY = frozenset({"caries"})
"""Plural words with no other singular: kept as they are, and a name ending in one takes a plural verb."""
_SINGULAR_IN_S = frozenset({"lens", "pons", "iris", "pelvis", "pancreas", "iliopsoas", "thalamus", "corpus"})
"""Singular words ending in s that the suffix rule would otherwise cut ("lens" is not the plural of "len")."""
_SINGULAR_ENDINGS = ("ss", "us", "is", "as")


def singular(word: str) -> str:
    """Singular of one lower-case word: the irregular table, then ``ies``->``y``, ``ches``/``xes``/...->drop
    ``es``, then a final ``s``; words the table marks singular or plural-only are returned unchanged."""
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if word in _PLURAL_ONLY or word in _SINGULAR_IN_S:
        return word
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "uses", "xes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(_SINGULAR_ENDINGS):
        return word[:-1]
    return word


_SINGULAR_OF_IRREGULAR = {one: many for many, one in _IRREGULAR_PLURALS.items()}


def _plural_word(word: str) -> str:
    """Plural of one lower-case singular word: the irregular table read backwards, then English suffixes."""
    if word in _SINGULAR_OF_IRREGULAR:
        return _SINGULAR_OF_IRREGULAR[word]
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    return word + "s"


def plural(name: str) -> str:
    """The plural of a structure name, for "How many X?", from the table behind :func:`singular`.

    The head noun changes: the last word ("cell nucleus" -> "cell nuclei", "left kidney" -> "left
    kidneys", "T9 vertebra" -> "T9 vertebrae", "artery" -> "arteries"), or the word before "of"
    ("left lower lobe of the lung" -> "left lower lobes of the lung"). A name that is already plural
    ("cell nuclei", "dental caries", "both lungs") is returned unchanged.
    """
    if not name.strip() or is_plural(name):
        return name
    words = name.split(" ")
    at = _head_index(words)
    many = _plural_word(words[at].lower())
    words[at] = many[0].upper() + many[1:] if words[at][:1].isupper() else many
    return " ".join(words)


def is_plural(name: str) -> bool:
    """Whether a name is grammatically plural, for verb agreement: its head noun (the last word, or the
    word before "of") is plural by :func:`singular`'s table ("cell nuclei", "retinal vessels", "dental
    caries", "lower lobes of the lung") or it starts with "both"."""
    words = name.lower().split()
    if not words:
        return False
    head = words[_head_index(words)]
    return words[0] == "both" or head in _PLURAL_ONLY or singular(head) != head


def _head_index(words: list[str]) -> int:
    """Index of a name's head noun: the word before the first "of" ("lobes of the lung"), else the last."""
    return words.index("of") - 1 if "of" in words[1:] else len(words) - 1


# ---- comparison keys -----------------------------------------------------------------------------


def _key_words(text: str) -> list[str]:
    """Lower-case alphanumeric words of ``text``, each side word once and first (left before right),
    a leading "the" dropped: the one comparison rule behind :func:`name_key` and :func:`canonical_name`."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    sides = [s for s in _SIDE_WORDS if s in words]
    rest = [w for w in words if w not in _SIDE_WORDS]
    if rest[:1] == ["the"]:
        rest = rest[1:]
    return [*sides, *rest]


@lru_cache(maxsize=8192)
def name_key(raw: str) -> str:
    """Comparison key of a dataset name: the comparison words of its :func:`clean_name`, plural kept.

    "lower lobe of the left lung", "lung_lower_lobe_left" -> "left lower lobe of the lung".
    Raises ValueError for a name that is empty after cleaning.
    """
    return " ".join(_key_words(clean_name(raw)))


def mention_words(text: str) -> list[str]:
    """The words of free text as :func:`canonical_name` spells them, in text order (sides not moved):
    where to look for a canonical name as a run of whole words. "The LEFT kidneys." -> the, left, kidney."""
    return [singular(w) for w in re.findall(r"[a-z0-9]+", text.lower())]


def canonical_name(name: str) -> str:
    """Strict-protocol key of free text: its comparison words, each made :func:`singular`.

    ``"Hip_Left"`` -> ``"left hip"``, ``"Kidneys"`` -> ``"kidney"``, ``"the liver"`` -> ``"liver"``.
    Unlike :func:`name_key` it does not rewrite dataset spellings (model answers are not dataset keys).
    """
    return " ".join(singular(w) for w in _key_words(name))


# ---- synonyms (strict protocol) ------------------------------------------------------------------

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
    padded = " " + " ".join(mention_words(response)) + " "
    return any(f" {form} " in padded for form in forms if form)


# ---- compatibility -------------------------------------------------------------------------------


def _before_note(raw: str) -> str:
    """A raw name up to its first parenthesis, trimmed: "cell nuclei (instance label map)" -> "cell nuclei"."""
    return raw.split("(")[0].strip()


def icl_key(raw: str) -> str:
    """The in-context segmenter's key of a dataset structure: "cell nuclei (instance label map)" -> "cell_nuclei".

    The raw name up to its first parenthesis, spaces as underscores; the shipped weights' task list
    (``medground/icl/weights/meta.json``) is spelled ``source/key`` in these keys.
    """
    return _before_note(raw).replace(" ", "_")
