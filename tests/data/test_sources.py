import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medground.data.sources import Item, SourceError, VolumeOptions, case_key, detect_kind, open_source
from medground.types import Rejected, Sample

MEDSEG = [
    "sa_med2d_demo_ct",
    "brats2021_flair_mr",
    "hc18_fetal_ultrasound",
    "kvasir_seg_endoscopy",
    "ph2_dermoscopy",
    "drive_fundus",
    "cpm15_nuclei_histopathology",
    "dc1000_dental_xray",
    "covid19_medseg_ct",
    "shenzhen_cxr_lung_xray",
]


@pytest.mark.parametrize(
    ("stem", "case"),
    [
        # SA-Med2D: dataset and case, without the modality prefix (one subject's sequences = one patient)
        ("ct_00--AbdomenCT1K--Case_00220--x_0359", "AbdomenCT1K--Case_00220"),
        ("mr_flair--BraTS2021--BraTS2021_00218--z_0141", "BraTS2021--BraTS2021_00218"),
        ("BraTS2021_01646_z042", "BraTS2021_01646"),
        ("amos_0004_75", "amos_0004"),
        ("CHNCXR_0001_0", "CHNCXR_0001"),
        ("img_001", None),  # a plain numbering: nothing left with a digit, so not a slice index: unknown
        ("IMD002", None),
    ],
)
def test_case_keys(stem, case):
    assert case_key(stem) == case


@pytest.mark.parametrize("name", MEDSEG)
def test_every_shared_medseg_dataset_opens_and_loads(shared_data, name):
    root = shared_data / "medseg" / name
    source = open_source(root)
    assert source.kind == "medseg"
    with open(root / "pairs.csv", newline="") as handle:
        images = {row["image"] for row in csv.DictReader(handle)}
    items = [i for i in source.items() if isinstance(i, Item)]
    assert len(items) == len(images)
    results = list(source.load(items[0]))
    samples = [r for r in results if isinstance(r, Sample)]
    assert len(samples) == 1
    sample = samples[0]
    assert sample.image.dtype == np.uint8 and sample.image.ndim in (2, 3)
    assert sample.modality == source.modality
    for structure in sample.structures:
        assert structure.mask.shape == sample.image.shape[:2] and structure.mask.any()


def test_sa_med2d_index_gives_structures_and_instances(shared_data):
    source = open_source(f"sa-med2d:{shared_data / 'medseg' / 'sa_med2d_demo_ct'}")
    items = {i.key: i for i in source.items()}
    assert set(items) == {"amos_0004_75", "amos_0006_90", "s0114_111", "s0619_32"}
    pelvis = [s for s in source.load(items["s0619_32"]) if isinstance(s, Sample)][0]
    hips = sorted((s.name, s.instance) for s in pelvis.structures if s.name.startswith("hip"))
    assert hips == [("hip_left", 0), ("hip_left", 1), ("hip_right", 0), ("hip_right", 1)]
    assert pelvis.modality == "ct" and pelvis.case == "s0619"
    assert "vertebrae_T9" in source.vocabulary()


def test_sa_med2d_modality_from_file_prefix(tmp_path):
    image = np.zeros((32, 32), np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[4:20, 8:24] = 255
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    stem = "mr_t1--BraTS--Case_001--z_0042"
    Image.fromarray(image).save(tmp_path / "data" / "images" / f"{stem}.png")
    Image.fromarray(mask).save(tmp_path / "data" / "masks" / f"{stem}_brain_tumor_000.png")
    index = {f"data/images/{stem}.png": [f"data/masks/{stem}_brain_tumor_000.png"]}
    (tmp_path / "image2label_train.json").write_text(json.dumps(index))
    source = open_source(tmp_path / "image2label_train.json")
    item = next(source.items())
    sample = next(source.load(item))
    assert sample.modality == "mr" and sample.case == "BraTS--Case_001"
    assert [(s.name, s.instance) for s in sample.structures] == [("brain_tumor", 0)]


def _folder(tmp_path: Path, masks: dict[str, np.ndarray], image_size=(40, 30)) -> Path:
    root = tmp_path / "plain"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem in {k.split("_")[0] for k in masks}:
        Image.fromarray(np.full(image_size[::-1], 100, np.uint8)).save(root / "images" / f"{stem}.png")
    for name, mask in masks.items():
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    return root


def test_folder_source_pairs_by_name_and_reports_bad_masks(tmp_path):
    good = np.zeros((30, 40), np.uint8)
    good[5:10, 5:15] = 255
    root = _folder(
        tmp_path,
        {"a_tumor": good, "b_tumor": np.zeros((30, 40), np.uint8), "c_tumor": np.zeros((10, 10), np.uint8)},
    )
    source = open_source(root, modality="ultrasound")
    assert detect_kind(root) == "folder"
    results = [r for item in source.items() for r in source.load(item)]
    samples = [r for r in results if isinstance(r, Sample)]
    rejected = {Path(r.input).name: r.reason for r in results if isinstance(r, Rejected)}
    assert [s.id for s in samples] == ["plain/a"] and samples[0].structures[0].name == "tumor"
    assert "empty" in rejected["b_tumor.png"]
    assert "differs from image size" in rejected["c_tumor.png"] and "40x30" in rejected["c_tumor.png"]


def test_folder_source_does_not_give_image_1_the_masks_of_image_10(tmp_path):
    mask = np.zeros((30, 40), np.uint8)
    mask[0:10, 0:10] = 255
    root = _folder(tmp_path, {"1_a": mask, "10_a": mask})
    items = {
        i.key: [Path(m.path).name for m in i.payload["masks"]]
        for i in open_source(root, modality="ct").items()
    }
    assert items == {"1": ["1_a.png"], "10": ["10_a.png"]}


def test_unknown_mask_values_are_rejected_with_the_values(tmp_path, shared_data):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(root / "images" / "x.png")
    mask = np.zeros((20, 20), np.uint8)
    mask[0:5, 0:5] = 255
    mask[10:15, 10:15] = 7
    Image.fromarray(mask).save(root / "masks" / "x.png")
    (root / "pairs.csv").write_text("image,mask,structure\nimages/x.png,masks/x.png,lesion\n")
    (root / "labels.json").write_text('{"0": "background", "255": "lesion"}')
    (root / "meta.json").write_text('{"modality": "CT"}')
    results = list(open_source(root).load(next(open_source(root).items())))
    assert isinstance(results[0], Rejected) and "[7]" in results[0].reason
    assert isinstance(results[-1], Rejected) and "no usable mask" in results[-1].reason


def test_nifti_pairs_with_per_file_label_groups(shared_data):
    source = open_source(shared_data / "medvol" / "openkbp_headneck_ct", options=VolumeOptions(slice_step=8))
    assert source.kind == "nifti"
    items = list(source.items())
    # two label volumes of one CT are one patient, named after the image volume (issue 9: they were two)
    assert len({i.key for i in items}) == 2 and {i.case for i in items} == {"openkbp_pt_22_ct"}
    oars = next(i for i in items if "oars" in i.key)
    samples = [s for s in source.load(oars) if isinstance(s, Sample)]
    names = {s.name for sample in samples for s in sample.structures}
    assert names <= {
        "Brainstem",
        "SpinalCord",
        "RightParotid",
        "LeftParotid",
        "Esophagus",
        "Larynx",
        "Mandible",
    }
    assert "Mandible" in names and all(s.modality == "ct" and s.plane == "axial" for s in samples)
    assert samples[0].spacing == pytest.approx((3.906, 3.906), abs=1e-3)


def test_nifti_channels_of_one_case_share_the_split_key(shared_data):
    source = open_source(shared_data / "medvol" / "brats2015_deepmedic_mr")
    cases = {i.case for i in source.items()}
    # two sequences sharing one label volume: one case, named after the first image volume in file order
    assert cases == {"brats_2013_pat0006_1_Flair_subtrMeanDivStd"}
    assert set(source.vocabulary()) == {"necrosis", "edema", "non-enhancing", "enhancing"}


def test_nifti_slices_only_labelled_planes(shared_data):
    source = open_source(
        shared_data / "medvol" / "brats2021_sammed3d_mr",
        options=VolumeOptions(planes=("sagittal",), slice_step=10),
    )
    item = next(source.items())
    samples = [s for s in source.load(item) if isinstance(s, Sample)]
    assert samples and all(s.plane == "sagittal" and s.structures[0].mask.any() for s in samples)
    assert all(s.image.shape == (104, 160) for s in samples)  # sagittal of 160x160x104: rows z, columns y


def test_nan_volume_is_rejected(tmp_path):
    import nibabel as nib

    root = tmp_path / "vol"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    data = np.zeros((8, 8, 4), np.float32)
    data[0, 0, 0] = np.nan
    label = np.zeros((8, 8, 4), np.uint8)
    label[2:4, 2:4, 1] = 1
    nib.save(nib.Nifti1Image(data, np.eye(4)), root / "imagesTr" / "case1_0000.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / "case1.nii.gz")
    (root / "labels.json").write_text('{"0": "background", "1": "liver"}')
    source = open_source(root, modality="ct")
    results = list(source.load(next(source.items())))
    assert len(results) == 1 and isinstance(results[0], Rejected) and "nan" in results[0].reason.lower()


def test_unknown_layout_and_kind_are_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="unknown layout"):
        open_source(tmp_path)
    with pytest.raises(SourceError, match="medseg"):
        open_source(f"medsge:{tmp_path}")


def test_sources_pickle_without_their_index(shared_data):
    source = open_source(shared_data / "medseg" / "covid19_medseg_ct")
    clone = pickle.loads(pickle.dumps(source))
    assert not hasattr(clone, "rows") and clone.modality == "ct"
    item = next(source.items())
    assert any(isinstance(r, Sample) for r in clone.load(item))


def test_dicom_series_with_a_mask_series(shared_data):
    root = shared_data / "dicom" / "tcia_brain_tumor_progression_mr"
    source = open_source(root)
    assert source.kind == "dicom" and source.vocabulary() == ["tumor"]
    (item,) = [i for i in source.items() if isinstance(i, Item)]
    # the patient key is the DICOM PatientID, not the study folder's name
    assert item.case == "PGBM-001" and item.payload["modality"] == "mr"
    samples = [s for s in source.load(item) if isinstance(s, Sample)]
    # MANIFEST: the tumor covers 8 slices and 6,809 voxels
    assert len(samples) == 8
    assert sum(int(s.structures[0].mask.sum()) for s in samples) == 6809


@pytest.mark.parametrize(
    ("folder", "description", "is_label", "name"),
    [
        ("MaskTumor", "Mask_Tumor", True, "tumor"),
        ("T1post", "T1 post", False, None),
        ("seg_liver", "", True, "liver"),
    ],
)
def test_dicom_label_series_naming(folder, description, is_label, name):
    from medground.data.sources.dicom import _label_name, is_label_series

    assert is_label_series(folder, description) is is_label
    if name:
        assert _label_name(folder, description) == name


def test_patient_side_is_claimed_only_where_the_display_is_known(shared_data):
    volume = open_source(
        shared_data / "medvol" / "brats2021_sammed3d_mr",
        options=VolumeOptions(planes=("axial", "sagittal"), slice_step=20),
    )
    samples = [s for item in volume.items() for s in volume.load(item) if isinstance(s, Sample)]
    assert {(s.plane, s.display) for s in samples} == {("axial", "radiological"), ("sagittal", None)}
    flat = open_source(shared_data / "medseg" / "sa_med2d_demo_ct")  # 2D slices: convention not stated
    sample = next(s for s in flat.load(next(flat.items())) if isinstance(s, Sample))
    assert sample.display is None
