"""Which sources are held out together: the near-identical domain groups of the ICL evaluation protocol.

Two datasets of one imaging domain and one structure (DRIVE and FIVES: fundus photographs, retinal
vessels) are near copies of each other for an in-context model: training on one and "holding out" the
other measures little. So a fold never separates members of a group: holding out one member holds
out the whole group, and a model that trained on a member does not count as held out from the others.
This module is the one place these groups are defined; add a group here when a new collection brings
near-identical datasets. Names are source names (dataset folder names).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["DOMAIN_GROUPS", "domain_group", "expand_held_out", "not_trained_on"]

DOMAIN_GROUPS: dict[str, frozenset[str]] = {
    "fundus vessels": frozenset({"drive_fundus", "fives_fundus_vessels"}),
    "dermoscopy lesions": frozenset({"ph2_dermoscopy", "isic2016_dermoscopy", "isic2018_dermoscopy"}),
    "GI endoscopy lesions": frozenset({"kvasir_seg_endoscopy", "edd2020_endoscopy_disease"}),
    "H&E nuclei": frozenset({"cpm15_nuclei_histopathology", "monuseg_nuclei_histopathology"}),
    "BraTS2021 case 01646": frozenset({"brats2021_flair_mr", "brats2021_sammed3d_mr"}),
}
"""Group name -> member sources. The BraTS pair is one patient stored twice (2D slices and the volume)."""


def domain_group(source: str) -> frozenset[str]:
    """The members of ``source``'s group (itself alone when it is in none)."""
    for members in DOMAIN_GROUPS.values():
        if source in members:
            return members
    return frozenset({source})


def expand_held_out(held_out: Iterable[str], known: Iterable[str]) -> set[str]:
    """Held-out names -> every known source of their groups; an unknown name is an error naming the known."""
    known_set, held = set(known), set(held_out)
    unknown = held - known_set
    if unknown:
        raise ValueError(
            f"held-out sources {sorted(unknown)} match no loaded dataset; known sources: {sorted(known_set)}"
        )
    return {member for name in held for member in domain_group(name) if member in known_set}


def not_trained_on(sources: Iterable[str], trained: Iterable[str]) -> set[str]:
    """The sources with no member of their group among ``trained`` (out of distribution for that model)."""
    seen = {member for name in trained for member in domain_group(name)}
    return {s for s in sources if s not in seen}
