"""The leave-domain-out folds: each dataset of the shared collection held out exactly once, groups whole."""

from __future__ import annotations

import pytest

from medground.icl import protocol
from medground.icl.protocol import FOLDS, TRAINING_ONLY, check_folds

SHARED_2D = [
    "brats2021_flair_mr", "covid19_medseg_ct", "cpm15_nuclei_histopathology", "dc1000_dental_xray",
    "drive_fundus", "edd2020_endoscopy_disease", "fives_fundus_vessels", "fuseg_wound_photo",
    "glas_colon_glands_histopathology", "hc18_fetal_ultrasound", "idrid_fundus_optic_disc",
    "kvasir_seg_endoscopy", "monuseg_nuclei_histopathology", "msd_lung_tumour_ct_patches",
    "ph2_dermoscopy", "sa_med2d_demo_ct", "shenzhen_cxr_lung_xray", "usgra_nerve_vessel_ultrasound",
]  # fmt: skip
"""The 18 folders of shared/data/medseg (its MANIFEST.md), written out by hand."""


def test_every_shared_dataset_is_held_out_once_and_hippocampus_is_scored() -> None:
    check_folds(SHARED_2D + ["msd_hippocampus_mr", *TRAINING_ONLY])
    placed = sorted(s for members in FOLDS.values() for s in members)
    assert placed == sorted(SHARED_2D + ["msd_hippocampus_mr"])
    assert max(len(m) for m in FOLDS.values()) <= 23 // 5  # 19 scored + 4 training-only datasets
    fold_of = {s: name for name, members in FOLDS.items() for s in members}
    assert fold_of["drive_fundus"] == fold_of["fives_fundus_vessels"]  # one domain group


def test_a_source_in_no_fold_is_named() -> None:
    with pytest.raises(ValueError, match="new_dataset"):
        check_folds(SHARED_2D + ["new_dataset"])


def test_a_split_group_and_an_oversized_fold_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    split = {**FOLDS, "1": ("drive_fundus",), "6": ("fives_fundus_vessels",)}
    monkeypatch.setattr(protocol, "FOLDS", split)
    with pytest.raises(ValueError, match="split over folds"):
        protocol.check_folds()
    monkeypatch.setattr(protocol, "FOLDS", {"1": tuple(SHARED_2D[7:12])})  # 5 of 5 + 4 datasets
    with pytest.raises(ValueError, match="more than 1/5"):
        protocol.check_folds()
