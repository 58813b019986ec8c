"""Med-GRIT / BiRD's eight modalities and the map from any modality name onto them (ground floor).

The data engine keeps every modality a dataset states (an open vocabulary: "photography", "oct", ...);
BiRD's evaluation protocol knows only eight. This module is the one place that says which of the eight
a name counts under, so that ``data`` (which writes the names) and ``eval`` (which scores them under
BiRD's protocol) agree; it imports nothing of ours.
"""

from __future__ import annotations

__all__ = ["BIRD_FILE_PREFIX", "MEDGRIT_MODALITIES", "MEDGRIT_SUBTYPES", "OTHER", "medgrit_modality"]

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
