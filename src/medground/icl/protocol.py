"""Which sources are held out together: domain groups and leave-domain-out folds of the evaluation protocol.

Two datasets of one imaging domain (one modality, overlapping body regions: DRIVE's vessels and IDRiD's
optic disc, both colour fundus photographs of the retina) share most of what an in-context model learns
about images: training on one and "holding out" the other measures little. So a fold never separates
members of a domain: holding out one member holds out the whole domain, and a model that trained on a
member does not count as held out from the others. ``SOURCE_DOMAINS`` is the one table, one rule for
every modality; add a source there when a new collection arrives. Names are source names (dataset
folder names).

It is also the one place of the leave-domain-out folds (``FOLDS``, ``TRAINING_ONLY``, checked by
``check_folds``) that bench/bench_boxseg.py and bench/bench_icl_folds.py hold datasets out by.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "DOMAIN_GROUPS",
    "FOLDS",
    "SOURCE_DOMAINS",
    "TRAINING_ONLY",
    "check_folds",
    "domain_group",
    "expand_held_out",
    "not_trained_on",
]

SOURCE_DOMAINS: dict[str, tuple[str, str]] = {
    "drive_fundus": ("fundus", "retina"),
    "fives_fundus_vessels": ("fundus", "retina"),
    "idrid_fundus_optic_disc": ("fundus", "retina"),
    "ph2_dermoscopy": ("dermoscopy", "skin"),
    "isic2016_dermoscopy": ("dermoscopy", "skin"),
    "isic2018_dermoscopy": ("dermoscopy", "skin"),
    "kvasir_seg_endoscopy": ("endoscopy", "GI tract"),
    "edd2020_endoscopy_disease": ("endoscopy", "GI tract"),
    "cpm15_nuclei_histopathology": ("histopathology", "H&E tissue"),
    "monuseg_nuclei_histopathology": ("histopathology", "H&E tissue"),
    "glas_colon_glands_histopathology": ("histopathology", "H&E tissue"),
    "brats2021_flair_mr": ("mr", "brain"),
    "brats2021_sammed3d_mr": ("mr", "brain"),
    "brats2015_deepmedic_mr": ("mr", "brain"),
    "msd_hippocampus_mr": ("mr", "brain"),
    "sct_spinalcord_mr": ("mr", "spinal cord"),
    "covid19_medseg_ct": ("ct", "trunk (chest, abdomen, pelvis)"),
    "msd_lung_tumour_ct_patches": ("ct", "trunk (chest, abdomen, pelvis)"),
    "sa_med2d_demo_ct": ("ct", "trunk (chest, abdomen, pelvis)"),
    "openkbp_headneck_ct": ("ct", "head and neck"),
    "ddti_thyroid_nodule_ultrasound": ("ultrasound", "neck and limbs"),
    "usgra_nerve_vessel_ultrasound": ("ultrasound", "neck and limbs"),
    "hc18_fetal_ultrasound": ("ultrasound", "fetus"),
    "shenzhen_cxr_lung_xray": ("x-ray", "chest"),
    "dc1000_dental_xray": ("x-ray", "teeth"),
    "fuseg_wound_photo": ("photography", "foot"),
}
"""Source -> (modality, body region): the one table domain groups come from. The rule, the same for every
modality: sources of one modality whose body regions overlap (meta.json ``modality`` and ``body_region``)
are one domain, whatever structure they label: optic disc and vessels of the retina, polyps and cancer
of the GI tract, nuclei and glands in H&E tissue, tumour and hippocampus of the brain, lesions and organs
of the trunk's CT (sa_med2d's AMOS / TotalSegmentator slices cover the chest), thyroid nodules and the
neck's nerves (usgra's plexus views are of the neck). A source not listed is a domain of its own."""

DOMAIN_GROUPS: dict[str, frozenset[str]] = {
    f"{modality}, {region}": members
    for (modality, region) in sorted(set(SOURCE_DOMAINS.values()))
    if len(members := frozenset(s for s, d in SOURCE_DOMAINS.items() if d == (modality, region))) > 1
}
"""Group name ("modality, region") -> member sources, for every domain of SOURCE_DOMAINS with two or more."""


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
    "1": ("drive_fundus", "fives_fundus_vessels", "idrid_fundus_optic_disc", "hc18_fetal_ultrasound"),
    "2": (
        "cpm15_nuclei_histopathology",
        "monuseg_nuclei_histopathology",
        "glas_colon_glands_histopathology",
        "ph2_dermoscopy",
    ),
    "3": ("kvasir_seg_endoscopy", "edd2020_endoscopy_disease", "brats2021_flair_mr", "msd_hippocampus_mr"),
    "4": ("covid19_medseg_ct", "msd_lung_tumour_ct_patches", "sa_med2d_demo_ct", "fuseg_wound_photo"),
    "5": (
        "ddti_thyroid_nodule_ultrasound",
        "usgra_nerve_vessel_ultrasound",
        "shenzhen_cxr_lung_xray",
        "dc1000_dental_xray",
    ),
}
"""Leave-domain-out folds over the shared collection, fixed 2026-12-08 with the domain table above (the
folds of 2026-12-01 split the retina, H&E, brain MR and trunk CT domains over two folds each, so a fold's
model had trained on the domain it was scored on): the 19 2D datasets of ``shared/data/medseg`` plus the
8 hippocampus MR subjects (scored by patient), every domain whole in one fold. Fold name -> the sources
it holds out; a fold's model trains on every other source."""

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
