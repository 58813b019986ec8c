"""The leave-domain-out folds: each dataset of the shared collection held out exactly once, groups whole."""

from __future__ import annotations

import pytest

from medground.icl import protocol
from medground.icl.protocol import FOLDS, TRAINING_ONLY, check_folds

SHARED_2D = [
    "brats2021_flair_mr", "covid19_medseg_ct", "cpm15_nuclei_histopathology", "dc1000_dental_xray",
    "ddti_thyroid_nodule_ultrasound",
    "drive_fundus", "edd2020_endoscopy_disease", "fives_fundus_vessels", "fuseg_wound_photo",
    "glas_colon_glands_histopathology", "hc18_fetal_ultrasound", "idrid_fundus_optic_disc",
    "kvasir_seg_endoscopy", "monuseg_nuclei_histopathology", "msd_lung_tumour_ct_patches",
    "ph2_dermoscopy", "sa_med2d_demo_ct", "shenzhen_cxr_lung_xray", "usgra_nerve_vessel_ultrasound",
]  # fmt: skip
"""The 19 folders of shared/data/medseg (its MANIFEST.md), written out by hand."""


def test_every_shared_dataset_is_held_out_once_and_hippocampus_is_scored() -> None:
    check_folds(SHARED_2D + ["msd_hippocampus_mr", *TRAINING_ONLY])
    placed = sorted(s for members in FOLDS.values() for s in members)
    assert placed == sorted(SHARED_2D + ["msd_hippocampus_mr"])
    assert max(len(m) for m in FOLDS.values()) <= 24 // 5  # 20 scored + 4 training-only datasets
    fold_of = {s: name for name, members in FOLDS.items() for s in members}
    # One domain per modality and body region, whatever the structure: each held out whole.
    for same in (
        ("drive_fundus", "fives_fundus_vessels", "idrid_fundus_optic_disc"),
        ("kvasir_seg_endoscopy", "edd2020_endoscopy_disease"),
        ("cpm15_nuclei_histopathology", "monuseg_nuclei_histopathology", "glas_colon_glands_histopathology"),
        ("brats2021_flair_mr", "msd_hippocampus_mr"),
        ("covid19_medseg_ct", "msd_lung_tumour_ct_patches", "sa_med2d_demo_ct"),
    ):
        assert len({fold_of[s] for s in same}) == 1, same


def test_domain_groups_follow_one_rule_for_every_modality() -> None:
    """A group is exactly the sources of one (modality, body region); the brain MR group takes the training-only
    BraTS volumes too, so a fold holding out brain MR trains on none of them."""
    from medground.icl.protocol import DOMAIN_GROUPS, SOURCE_DOMAINS, domain_group, not_trained_on

    for source, domain in SOURCE_DOMAINS.items():
        assert domain_group(source) == {s for s, d in SOURCE_DOMAINS.items() if d == domain}
    assert all(len(members) > 1 for members in DOMAIN_GROUPS.values())
    assert domain_group("brats2015_deepmedic_mr") == domain_group("msd_hippocampus_mr")
    assert domain_group("hc18_fetal_ultrasound") == {"hc18_fetal_ultrasound"}  # fetal: no other
    assert domain_group("unlisted_source") == {"unlisted_source"}
    # A model trained on DRIVE is not held out from IDRiD (the 2026-12-01 folds counted it so).
    assert not_trained_on({"idrid_fundus_optic_disc", "ph2_dermoscopy"}, {"drive_fundus"}) == {
        "ph2_dermoscopy"
    }


def test_a_source_in_no_fold_is_named() -> None:
    with pytest.raises(ValueError, match="new_dataset"):
        check_folds(SHARED_2D + ["new_dataset"])


def test_a_split_group_and_an_oversized_fold_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    split = {**FOLDS, "1": ("drive_fundus", "idrid_fundus_optic_disc"), "6": ("fives_fundus_vessels",)}
    monkeypatch.setattr(protocol, "FOLDS", split)
    with pytest.raises(ValueError, match="split over folds"):
        protocol.check_folds()
    monkeypatch.setattr(protocol, "FOLDS", {"1": tuple(SHARED_2D[7:12])})  # 5 of 5 + 4 datasets
    with pytest.raises(ValueError, match="more than 1/5"):
        protocol.check_folds()
