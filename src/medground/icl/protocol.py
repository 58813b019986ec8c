"""Which sources are held out together: domain groups and leave-domain-out folds of the evaluation protocol.

Two datasets of one imaging domain and one structure (DRIVE and FIVES: fundus photographs, retinal
vessels) are near copies of each other for an in-context model: training on one and "holding out" the
other measures little. So a fold never separates members of a group: holding out one member holds
out the whole group, and a model that trained on a member does not count as held out from the others.
This module is the one place these groups are defined; add a group here when a new collection brings
near-identical datasets. Names are source names (dataset folder names).

It is also the one place of the leave-domain-out folds (``FOLDS``, ``TRAINING_ONLY``, checked by
``check_folds``) that bench/bench_boxseg.py and bench/bench_icl_folds.py hold datasets out by.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "DOMAIN_GROUPS",
    "FOLDS",
    "TRAINING_ONLY",
    "check_folds",
    "domain_group",
    "expand_held_out",
    "not_trained_on",
]

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


FOLDS: dict[str, tuple[str, ...]] = {
    "1": ("drive_fundus", "fives_fundus_vessels", "ph2_dermoscopy", "hc18_fetal_ultrasound"),
    "2": (
        "cpm15_nuclei_histopathology",
        "monuseg_nuclei_histopathology",
        "kvasir_seg_endoscopy",
        "edd2020_endoscopy_disease",
    ),
    "3": ("brats2021_flair_mr", "covid19_medseg_ct", "fuseg_wound_photo", "dc1000_dental_xray"),
    "4": (
        "glas_colon_glands_histopathology",
        "msd_lung_tumour_ct_patches",
        "idrid_fundus_optic_disc",
        "msd_hippocampus_mr",
    ),
    "5": ("sa_med2d_demo_ct", "shenzhen_cxr_lung_xray", "usgra_nerve_vessel_ultrasound"),
}
"""Leave-domain-out folds over the shared collection (fixed 2026-12-01 before any fold was scored):
the 18 2D datasets of ``shared/data/medseg`` (the folds bench_boxseg.py used) plus the one volume
collection with several patients, the 8 hippocampus MR subjects (scored by patient). Fold name ->
the sources it holds out; a fold's model trains on every other source."""

TRAINING_ONLY: frozenset[str] = frozenset(
    {"brats2015_deepmedic_mr", "brats2021_sammed3d_mr", "openkbp_headneck_ct", "sct_spinalcord_mr"}
)
"""Volume collections of one or two patients: their slices train every fold's model (a member of a
held-out domain group is left out with its group) and are never scored, since supports and queries
could not come from different patients (two subjects are too few for a bootstrap over patients)."""


def check_folds(sources: Iterable[str] = ()) -> None:
    """Raise ValueError unless FOLDS and TRAINING_ONLY are a valid protocol for ``sources``.

    Every source is in exactly one fold or is training-only; no domain group is split over two
    folds; a fold holds at most 1/5 of all datasets (fold members plus training-only ones).
    """
    placed = [s for members in FOLDS.values() for s in members]
    repeated = sorted({s for s in placed if placed.count(s) > 1} | (set(placed) & TRAINING_ONLY))
    if repeated:
        raise ValueError(f"sources in more than one fold (or a fold and TRAINING_ONLY): {repeated}")
    missing = sorted(set(sources) - set(placed) - TRAINING_ONLY)
    if missing:
        raise ValueError(f"sources in no fold and not training-only: {missing}; add them to protocol.FOLDS")
    fold_of = {s: name for name, members in FOLDS.items() for s in members}
    for source, name in fold_of.items():
        split = {fold_of[m] for m in domain_group(source) if m in fold_of} - {name}
        if split:
            raise ValueError(f"domain group of {source} split over folds {sorted(split | {name})}")
    limit = (len(placed) + len(TRAINING_ONLY)) // 5
    large = {name: len(members) for name, members in FOLDS.items() if len(members) > limit}
    if large:
        raise ValueError(f"folds {large} hold more than 1/5 of the datasets (at most {limit} each)")
