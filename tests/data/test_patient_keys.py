"""Issue 21, items 2 and 7: one patient, one key, whatever source or file name it comes through.

Expected keys are written out by hand from the fixtures' names and meta.json files.
"""

import warnings
from pathlib import Path

import numpy as np
import pytest

from medground.data.api import build_dataset
from medground.data.records import RecordConfig, split_of
from medground.data.sources import Item, SourceError, open_source
from tests.data.test_truth import _medseg

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "medground" / "sample" / "medseg"


def _cases(source) -> dict[str, str | None]:
    return {item.key: item.case for item in source.items() if isinstance(item, Item)}


def test_cases_dataset_keeps_a_dataset_of_unknown_patients_in_one_split(tmp_path):
    root = _medseg(tmp_path / "ds", ["a", "b", "c", "d", "e", "f"], {"modality": "ct", "cases": "dataset"})
    assert set(_cases(open_source(root)).values()) == {"ds/*"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = build_dataset([root], tmp_path / "out", RecordConfig(), report=False, progress=False)
    assert not [w for w in caught if "patients of" in str(w.message)]  # declared: no unknown-patient warning
    assert manifest["counts"]["splits"] == {split_of("ds/*", 0, (0.8, 0.1, 0.1)): 6}


def test_case_alias_gives_one_patient_one_key_across_sources(tmp_path):
    kits = _medseg(tmp_path / "kits", ["case_00220_z010"], {"modality": "ct"})
    abdomen = _medseg(
        tmp_path / "abdomen",
        ["Case_00220_z040", "Case_00221_z040"],
        {"modality": "ct", "case_alias": {"Case_00220": "case_00220"}, "case_namespace": "abdomen1k"},
    )
    assert _cases(open_source(kits)) == {"case_00220_z010": "case_00220"}
    # the alias is the key as written (no namespace); other keys keep the namespace
    assert _cases(open_source(abdomen)) == {
        "Case_00220_z040": "case_00220",
        "Case_00221_z040": "abdomen1k:Case_00221",
    }
    with pytest.raises(SourceError, match="case_alias"):
        open_source(_medseg(tmp_path / "bad", ["x_z001"], {"modality": "ct", "case_alias": ["Case_00220"]}))


def test_nnunet_channel_suffix_is_not_part_of_the_patient(tmp_path):
    import nibabel as nib

    root = tmp_path / "nnunet"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    label = np.zeros((8, 8, 4), np.uint8)
    label[2:5, 2:5, 1] = 1
    for case in ("case_00220", "case_00221"):
        nib.save(
            nib.Nifti1Image(np.ones((8, 8, 4), np.float32), np.eye(4)),
            root / "imagesTr" / f"{case}_0000.nii.gz",
        )
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"{case}.nii.gz")
    (root / "labels.json").write_text('{"0": "background", "1": "kidney"}')
    source = open_source(root, modality="ct")
    assert sorted(item.case for item in source.items()) == ["case_00220", "case_00221"]


def test_the_bundled_sample_declares_every_patient():
    for folder in sorted(p for p in SAMPLE.iterdir() if (p / "pairs.csv").exists()):
        source = open_source(folder)
        unknown = [item.key for item in source.items() if isinstance(item, Item) and item.case is None]
        assert unknown == [], folder.name


def test_the_build_warns_of_look_alike_keys_in_two_splits(tmp_path):
    ratios = (0.8, 0.1, 0.1)
    number = next(
        n
        for n in range(200, 400)
        if split_of(f"case_{n:05d}", 0, ratios) != split_of(f"AbdomenCT1K--Case_{n:05d}", 0, ratios)
    )
    kits = _medseg(tmp_path / "kits", ["a"], {"modality": "ct"}, {"a": f"case_{number:05d}"})
    other = _medseg(tmp_path / "other", ["b"], {"modality": "ct"}, {"b": f"AbdomenCT1K--Case_{number:05d}"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = build_dataset(
            [kits, other], tmp_path / "out", RecordConfig(), report=False, progress=False
        )
    said = [str(w.message) for w in caught if "look alike" in str(w.message)]
    assert len(said) == 1 and f"case_{number:05d}" in said[0] and "case_alias" in said[0]
    assert said[0] in manifest["warnings"]
