"""Modality names, in one place (ground floor; imports nothing of ours).

Med-GRIT / BiRD's eight modalities and the map from any modality name onto them: the data engine keeps
every modality a dataset states (an open vocabulary: "photography", "oct", ...); BiRD's evaluation
protocol knows only eight, and :func:`medgrit_modality` says which of the eight a name counts under,
so that ``data`` (which writes the names) and ``eval`` (which scores them) agree.

The open vocabulary: a record carries whatever modality its dataset states, normalised by
:func:`normalise_modality` (a known name or alias becomes one of :data:`MODALITIES`, any other name is
kept as lowercase text, and the sources warn about it). :func:`canonical_modality` is the strict form
for user input that must be known. SA-Med2D-20M file names
(``{modality_sub-modality}--{dataset}--{case}--{axis_slice}.png``) go through
:func:`modality_from_sa_med2d_name` and :func:`plane_from_sa_med2d_name`.
"""

from __future__ import annotations

import difflib
import re
from pathlib import PurePath

__all__ = [
    "BIRD_FILE_PREFIX",
    "DISPLAY_NAMES",
    "IMAGE_NOUNS",
    "MEDGRIT_MODALITIES",
    "MEDGRIT_SUBTYPES",
    "MODALITIES",
    "OTHER",
    "SA_MED2D_AXIS_PLANES",
    "bird_prefix",
    "canonical_modality",
    "display_name",
    "image_phrase",
    "is_known_modality",
    "medgrit_modality",
    "modality_from_sa_med2d_name",
    "normalise_modality",
    "plane_from_sa_med2d_name",
]

MEDGRIT_MODALITIES: tuple[str, ...] = (
    "ct",
    "mr",
    "x-ray",
    "pet",
    "endoscopy",
    "dermoscopy",
    "fundus",
    "ultrasound",
)
"""The eight modalities of Med-GRIT-270k / BiRD, canonical names, in BiRD's order."""

BIRD_FILE_PREFIX: dict[str, str] = {m: ("x" if m == "x-ray" else m) for m in MEDGRIT_MODALITIES}
"""Canonical name -> BiRD's file prefix and modality key (``test_x.jsonl``, key ``"x"``)."""

OTHER = "other"
"""What a modality outside the eight counts as inside BiRD's protocol."""

MEDGRIT_SUBTYPES: dict[str, str] = {
    "x": "x-ray",
    "mri": "mr",
    "xray": "x-ray",
    "mammography": "x-ray",
    "radiography": "x-ray",
    "fluoroscopy": "x-ray",
    "cbct": "ct",
    "pet-ct": "pet",
    "pet/ct": "pet",
    "colonoscopy": "endoscopy",
    "laparoscopy": "endoscopy",
    "echocardiography": "ultrasound",
}
"""Names that are one of the eight under another name (BiRD's own keys ``x``/``mri`` included)."""


def medgrit_modality(name: str) -> str:
    """One of :data:`MEDGRIT_MODALITIES` for a canonical modality name or BiRD key, else :data:`OTHER`.

    ``"x"`` -> ``"x-ray"``, ``"mammography"`` -> ``"x-ray"``, ``"oct"`` / ``"photography"`` ->
    ``"other"``. Case and surrounding spaces are ignored; ``_`` and ``-`` are the same.
    """
    key = name.strip().lower().replace("_", "-")
    if key in MEDGRIT_MODALITIES:
        return key
    return MEDGRIT_SUBTYPES.get(key, OTHER)


MODALITIES: tuple[str, ...] = (
    *MEDGRIT_MODALITIES,
    "histopathology",
    "microscopy",
    "photography",
    "oct",
    "mammography",
    "other",
)
"""The known canonical names: the eight Med-GRIT modalities, then others that datasets state often."""

DISPLAY_NAMES: dict[str, str] = {
    "ct": "CT",
    "mr": "MRI",
    "x-ray": "X-ray",
    "pet": "PET",
    "endoscopy": "endoscopy",
    "dermoscopy": "dermoscopy",
    "fundus": "fundus photography",
    "ultrasound": "ultrasound",
    "histopathology": "histopathology",
    "microscopy": "microscopy",
    "photography": "clinical photography",
    "oct": "OCT",
    "mammography": "mammography",
    "other": "medical imaging",
}

# The image noun of each modality, for sentences such as "This is an axial CT image".
IMAGE_NOUNS: dict[str, str] = {
    "ct": "CT image",
    "mr": "MRI image",
    "x-ray": "X-ray image",
    "pet": "PET image",
    "endoscopy": "endoscopy image",
    "dermoscopy": "dermoscopy image",
    "fundus": "fundus photograph",
    "ultrasound": "ultrasound image",
    "histopathology": "histopathology image",
    "microscopy": "microscopy image",
    "photography": "clinical photograph",
    "oct": "OCT image",
    "mammography": "mammogram",
    "other": "medical image",
}

# SA-Med2D-20M cuts 3D volumes along the axes of the SimpleITK array (slice, row, column): "x" is
# array axis 0, the acquisition's slice axis (axial for axially acquired CT/MR), "y" axis 1 (rows:
# coronal), "z" axis 2 (columns: sagittal). Evidence: ACDC short-axis stacks have ~10 slices and their
# SA-Med2D names use x_0000..x_0009; SA-Med2D drops slices whose sides differ more than 2x, so an x
# axis of 216 columns would have left no ACDC image. Volumes acquired sagittally or coronally break
# this mapping; 2D images ("2d_none") have no plane.
SA_MED2D_AXIS_PLANES: dict[str, str] = {"x": "axial", "y": "coronal", "z": "sagittal"}

_ALIASES: dict[str, tuple[str, ...]] = {
    "ct": ("ct", "computed tomography", "cta", "ct angiography", "cect", "ncct", "ct scan", "cbct"),
    "mr": (
        "mr",
        "mri",
        "magnetic resonance",
        "magnetic resonance imaging",
        "mr image",
        "cmr",
        "t1",
        "t1w",
        "t1c",
        "t1ce",
        "t1gd",
        "t2",
        "t2w",
        "flair",
        "dwi",
        "adc",
        "mprage",
        "pd",
        "lge",
    ),
    "x-ray": (
        "x-ray",
        "x ray",
        "xray",
        "x",
        "cxr",
        "chest x-ray",
        "radiograph",
        "radiography",
        "dx",
        "cr",
        "dental x-ray",
        "panoramic radiograph",
        "fluoroscopy",
        "xa",
    ),
    "pet": ("pet", "pt", "pet/ct", "pet-ct", "petct", "positron emission tomography", "pet ct"),
    "endoscopy": (
        "endoscopy",
        "endo",
        "endoscopic",
        "colonoscopy",
        "gastroscopy",
        "es",
        "laparoscopy",
        "capsule endoscopy",
        "bronchoscopy",
    ),
    "dermoscopy": ("dermoscopy", "derm", "dermatoscopy", "dermoscopic", "dermatology", "skin photograph"),
    "fundus": (
        "fundus",
        "fundus photography",
        "fundus photograph",
        "color fundus photography",
        "cfp",
        "retinal photography",
        "retinal fundus",
        "fundoscopy",
    ),
    "ultrasound": ("ultrasound", "us", "sonography", "ultrasonography", "echo", "echocardiography", "usg"),
    "histopathology": (
        "histopathology",
        "pathology",
        "histology",
        "wsi",
        "whole slide image",
        "h&e",
        "he",
        "digital pathology",
        "sm",
        "slide microscopy",
    ),
    "microscopy": (
        "microscopy",
        "cell microscopy",
        "fluorescence microscopy",
        "electron microscopy",
        "em",
        "light microscopy",
        "cell imaging",
    ),
    "photography": (
        "photography",
        "photograph",
        "photo",
        "clinical photo",
        "clinical photograph",
        "clinical photography",
        "clinical image",
        "wound photograph",
        "xc",
    ),
    "oct": ("oct", "optical coherence tomography", "oct angiography", "octa", "oct b-scan"),
    "mammography": ("mammography", "mammogram", "mg", "digital mammography", "ffdm", "tomosynthesis", "dbt"),
    "other": (
        "other",
        "ot",
        "unknown",
        "nm",
        "nuclear medicine",
        "sc",
        "secondary capture",
    ),
}

_LOOKUP: dict[str, str] = {alias: canon for canon, aliases in _ALIASES.items() for alias in aliases}


def _normalise(raw: str) -> str:
    """Lowercase, '_' -> ' ', runs of spaces collapsed: "Fundus_Photography " -> "fundus photography"."""
    return re.sub(r"\s+", " ", raw.strip().lower().replace("_", " "))


def _phrase_in(text: str) -> str | None:
    """Modality of the longest distinctive alias (3+ letters) found as whole words in free text."""
    words = text.split()
    for size in range(min(4, len(words)), 0, -1):
        for start in range(len(words) - size + 1):
            phrase = " ".join(words[start : start + size])
            if len(phrase) >= 3 and phrase in _LOOKUP:
                return _LOOKUP[phrase]
    return None


def _known(raw: str) -> str | None:
    """The canonical name of a known modality or alias in a raw name, or None.

    A name whose first word is a known modality followed by a sub-modality ("mr t1", "ct 00") maps
    to that modality; free text is searched for the longest alias of 3+ letters ("Color fundus
    photography" -> fundus).
    """
    key = _normalise(raw)
    for candidate in (key, key.replace("-", " "), key.replace(" ", "-"), key.replace(" ", "")):
        if candidate in _LOOKUP:
            return _LOOKUP[candidate]
    first = key.split(" ")[0] if key else ""
    if first in _LOOKUP:
        return _LOOKUP[first]
    return _phrase_in(re.sub(r"\([^)]*\)", " ", key))


def canonical_modality(raw: str) -> str:
    """The canonical name of a known modality ("MRI", "x_ray", "cxr", "mr_t1" ...), strictly.

    For input that must be one of :data:`MODALITIES` or an alias; unknown names raise ValueError listing
    the vocabulary and the closest alias. Datasets go through :func:`normalise_modality` instead.
    """
    found = _known(raw)
    if found:
        return found
    close = difflib.get_close_matches(_normalise(raw), list(_LOOKUP), n=1, cutoff=0.6)
    hint = f" The closest known name is {close[0]!r} ({_LOOKUP[close[0]]})." if close else ""
    raise ValueError(
        f"unknown modality {raw!r}; expected one of {', '.join(MODALITIES)} or an alias such as "
        f"'mri', 'xray', 'us', 'wsi'.{hint}"
    )


def normalise_modality(raw: str) -> str:
    """A dataset's modality as records carry it: the canonical name when known, else the raw name kept.

    "MRI" -> "mr"; "clinical photo" -> "photography"; "Thermography (infrared)" -> "thermography"
    (lowercase, parenthesised notes and extra spaces dropped). The vocabulary is open: an unknown name
    is not an error (callers warn, see :func:`is_known_modality`). An empty name raises ValueError.
    """
    found = _known(raw)
    if found:
        return found
    text = re.sub(r"\s+", " ", re.sub(r"\([^)]*\)", " ", _normalise(raw))).strip()
    if not text:
        raise ValueError(f"empty modality name {raw!r}")
    return text


def is_known_modality(name: str) -> bool:
    """Whether a name is one of :data:`MODALITIES` or a known alias (else it is kept as stated)."""
    return _known(name) is not None


def display_name(modality: str) -> str:
    """Display name of a modality: "mr" -> "MRI"; an unknown name is shown as stated."""
    name = normalise_modality(modality)
    return DISPLAY_NAMES.get(name, name)


def image_phrase(modality: str, plane: str | None = None) -> str:
    """Noun phrase with its article: ("mr") -> "an MRI image"; ("ct", "axial") -> "an axial CT image";
    an unknown modality ("thermography") -> "a thermography image"."""
    name = normalise_modality(modality)
    noun = IMAGE_NOUNS.get(name, f"{name} image")
    words = f"{plane} {noun}" if plane else noun
    first = words.split()[0]
    vowel = first[0].lower() in "aeiou" or first in ("MRI", "X-ray")
    return f"{'an' if vowel else 'a'} {words}"


def bird_prefix(modality: str) -> str:
    """BiRD's file prefix of the Med-GRIT modality a name counts under (:func:`medgrit_modality`:
    "x-ray" and "mammography" -> "x"); ValueError for a modality outside the eight."""
    canon = canonical_modality(modality)
    group = medgrit_modality(canon)
    if group not in BIRD_FILE_PREFIX:
        raise ValueError(
            f"modality {modality!r} ({canon}) is not one of Med-GRIT's {', '.join(MEDGRIT_MODALITIES)}"
        )
    return BIRD_FILE_PREFIX[group]


def _sa_med2d_fields(filename: str) -> list[str] | None:
    """The '--'-separated fields of an SA-Med2D-20M image or mask name, or None without the convention."""
    stem = PurePath(filename).name
    if stem.lower().endswith(".png"):
        stem = stem[:-4]
    fields = stem.split("--")
    return fields if len(fields) >= 4 else None


def modality_from_sa_med2d_name(filename: str) -> str | None:
    """Canonical modality from an SA-Med2D-20M file name, or None when the name has no such prefix.

    ``ct_00--AbdomenCT1K--Case_00220--x_0359.png`` -> "ct"; ``mr_t1--BraTS2021--...`` -> "mr";
    ``x_ray--covid_19_ct_cxr--16660_5_1--2d_none.png`` -> "x-ray". Names without the
    ``a--b--c--d`` convention (the demo's ``amos_0004_75.png``) give None. A prefix that is no known
    modality is kept without its sub-modality (``oct_00--...`` -> "oct", ``banana_00`` -> "banana").
    """
    fields = _sa_med2d_fields(filename)
    if fields is None:
        return None
    prefix = fields[0].lower()
    for candidate in (prefix, prefix.split("_")[0]):
        found = _known(candidate)
        if found:
            return found
    return normalise_modality(prefix.split("_")[0] or prefix)


def plane_from_sa_med2d_name(filename: str) -> str | None:
    """Plane of a 3D-derived SA-Med2D-20M slice from its ``--x_``/``--y_``/``--z_`` field, else None.

    x -> "axial", y -> "coronal", z -> "sagittal" (see :data:`SA_MED2D_AXIS_PLANES`); "2d_none",
    unknown axes and names without the convention give None. Works on image and mask names.
    """
    fields = _sa_med2d_fields(filename)
    if fields is None:
        return None
    match = re.fullmatch(r"([xyz])_\d+", fields[3].lower())
    return SA_MED2D_AXIS_PLANES[match.group(1)] if match else None
