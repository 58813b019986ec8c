"""Tests of medground.io.nifti on the real medvol volumes and tiny synthetic NIfTI files."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

from medground.io import ReadError, load_label_volume, load_volume, slice_volume, write_nifti_like

MEDVOL = "medvol"


def _save(path, array, affine=None):
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path


# ---- loading real volumes ----------------------------------------------------------------------


def test_ct_is_in_hounsfield_units(data):
    vol = load_volume(data(MEDVOL, "openkbp_headneck_ct", "images", "openkbp_pt_22_ct.nii.gz"))
    assert vol.array.dtype == np.float32 and vol.shape == (128, 128, 128)
    assert (float(vol.array.min()), float(vol.array.max())) == (-1024.0, 2952.0)  # MANIFEST
    assert vol.original_axcodes == ("P", "L", "I")
    assert vol.spacing == pytest.approx((3.906, 3.906, 2.5), abs=1e-3)


@pytest.mark.parametrize("name", ["t2", "t2s"])
def test_non_ras_files_match_nibabel_canonical(data, name):
    path = data(MEDVOL, "sct_spinalcord_mr", "images", f"{name}.nii.gz")
    vol = load_volume(path)
    canonical = nib.as_closest_canonical(nib.load(path))
    assert nib.aff2axcodes(canonical.affine) == ("R", "A", "S")
    assert np.array_equal(vol.array, canonical.get_fdata(dtype=np.float32))
    assert np.allclose(vol.affine, canonical.affine)
    assert np.allclose(vol.original_affine, nib.load(path).affine)


def test_psr_shape_and_spacing_reordered_by_hand(data):
    # t2 is PSR, 60x55x52 at 1 mm: file axes (P, S, R) become canonical (R, A, S) = (52, 60, 55).
    vol = load_volume(data(MEDVOL, "sct_spinalcord_mr", "images", "t2.nii.gz"))
    assert vol.original_axcodes == ("P", "S", "R") and vol.shape == (52, 60, 55)
    # t2s is LAS at 0.5 x 0.5 x 7.5 mm: only axis 0 flips, the order is kept.
    t2s = load_volume(data(MEDVOL, "sct_spinalcord_mr", "images", "t2s.nii.gz"))
    assert t2s.original_axcodes == ("L", "A", "S") and t2s.shape == (49, 54, 9)
    assert t2s.spacing == pytest.approx((0.5, 0.5, 7.5), abs=1e-6)


def test_every_file_voxel_lands_at_its_world_position(data):
    # Independent of the orientation code: map file voxels to world with the file affine, back
    # to canonical indices with the volume affine, and compare values.
    path = data(MEDVOL, "sct_spinalcord_mr", "images", "t2.nii.gz")
    raw = nib.load(path)
    file_values = raw.get_fdata()
    vol = load_volume(path)
    rng = np.random.default_rng(1)
    ijk = np.stack([rng.integers(0, n, 50) for n in raw.shape], axis=1)
    world = nib.affines.apply_affine(raw.affine, ijk)
    xyz = nib.affines.apply_affine(np.linalg.inv(vol.affine), world)
    assert np.allclose(xyz, np.round(xyz), atol=1e-4)
    xyz = np.round(xyz).astype(int)
    assert np.array_equal(vol.array[tuple(xyz.T)], file_values[tuple(ijk.T)].astype(np.float32))


def test_label_pairs_match_and_counts(data):
    expected = {
        "t2_seg-manual.nii.gz": {1: 4275},
        "t2s_gmseg_manual.nii.gz": {1: 519},
        "t1w_seg-manual.nii.gz": {1: 5437},
        "brats_2013_pat0006_1_OTMultiClass.nii.gz": {1: 41838, 2: 109935, 3: 22228, 4: 43379},
        "openkbp_pt_22_oars.nii.gz": {1: 528, 2: 451, 3: 487, 4: 379, 5: 186, 6: 308, 7: 2195},
    }
    for dataset in ("sct_spinalcord_mr", "brats2015_deepmedic_mr", "openkbp_headneck_ct"):
        folder = data(MEDVOL, dataset)
        with open(folder / "pairs.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                image = load_volume(folder / row["image"])
                label = load_label_volume(folder / row["label"], like=image)
                assert label.array.dtype == np.int32 and label.shape == image.shape
                name = row["label"].split("/")[-1]
                if name in expected:
                    values, counts = np.unique(label.array[label.array > 0], return_counts=True)
                    assert dict(zip(values.tolist(), counts.tolist(), strict=True)) == expected[name]


def test_canonical_anatomy_of_head_and_neck_labels(data):
    # MANIFEST: 3 RightParotid, 4 LeftParotid, 1 Brainstem, 5 Esophagus, 7 Mandible, 2 SpinalCord.
    labels = load_label_volume(
        data(MEDVOL, "openkbp_headneck_ct", "labels", "openkbp_pt_22_oars.nii.gz")
    ).array

    def centre(value):
        return np.argwhere(labels == value).mean(axis=0)  # (x -> Right, y -> Anterior, z -> Superior)

    assert centre(3)[0] > centre(4)[0]  # right parotid is more to the patient's right
    assert centre(7)[1] > centre(2)[1]  # mandible anterior of the spinal cord
    assert centre(1)[2] > centre(5)[2]  # brainstem superior of the oesophagus


def test_display_slices_of_real_labels_are_radiological(data):
    labels = load_label_volume(
        data(MEDVOL, "openkbp_headneck_ct", "labels", "openkbp_pt_22_oars.nii.gz")
    ).array
    z = int(np.argmax([(labels[..., k] == 3).any() and (labels[..., k] == 4).any() for k in range(128)]))
    axial = slice_volume(labels, "axial", z)
    assert np.argwhere(axial == 3)[:, 1].mean() < np.argwhere(axial == 4)[:, 1].mean()  # right on the left
    x = int(np.argwhere(labels == 2)[:, 0].mean())
    sagittal = slice_volume(labels, "sagittal", x)
    assert (
        np.argwhere(sagittal == 1)[:, 0].mean() < np.argwhere(sagittal == 5)[:, 0].mean()
    )  # superior on top
    assert np.argwhere(sagittal == 7)[:, 1].mean() < np.argwhere(sagittal == 2)[:, 1].mean()  # anterior left


# ---- bad inputs --------------------------------------------------------------------------------


def test_nan_volume_raises_with_count(tmp_path):
    array = np.zeros((3, 3, 3), np.float32)
    array[0, 0, 0], array[1, 2, 0] = np.nan, np.inf
    with pytest.raises(ReadError, match="2 of 27 voxels are NaN or inf"):
        load_volume(_save(tmp_path / "nan.nii.gz", array))


def test_trailing_singleton_4d_is_3d_but_real_4d_and_2d_raise(tmp_path):
    vol = load_volume(_save(tmp_path / "a.nii.gz", np.arange(24, dtype=np.float32).reshape(2, 3, 4, 1)))
    assert vol.shape == (2, 3, 4) and vol.array[1, 2, 3] == 23
    with pytest.raises(ReadError, match="expected 3D"):
        load_volume(_save(tmp_path / "b.nii.gz", np.zeros((2, 3, 4, 2), np.float32)))
    with pytest.raises(ReadError, match="expected 3D"):
        load_volume(_save(tmp_path / "c.nii.gz", np.zeros((2, 3), np.float32)))


def test_truncated_text_and_missing_files_raise(data, tmp_path):
    raw = data(MEDVOL, "sct_spinalcord_mr", "images", "t2.nii.gz").read_bytes()
    (tmp_path / "half.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ReadError, match="truncated or corrupt|not a readable"):
        load_volume(tmp_path / "half.nii.gz")
    (tmp_path / "text.nii.gz").write_text("hello")
    with pytest.raises(ReadError, match="not a readable"):
        load_volume(tmp_path / "text.nii.gz")
    with pytest.raises(ReadError, match="not found"):
        load_label_volume(tmp_path / "missing.nii.gz")


def test_float_labels_must_be_integers(tmp_path):
    ok = load_label_volume(_save(tmp_path / "ok.nii.gz", np.array([[[0.0, 2.0]]], np.float32)))
    assert ok.array.dtype == np.int32 and ok.array.ravel().tolist() == [0, 2]
    with pytest.raises(ReadError, match="non-integer"):
        load_label_volume(_save(tmp_path / "bad.nii.gz", np.array([[[0.0, 0.5]]], np.float32)))


def test_label_grid_mismatch_names_both_files(tmp_path):
    image = load_volume(_save(tmp_path / "img.nii.gz", np.zeros((4, 4, 3), np.float32)))
    _save(tmp_path / "small.nii.gz", np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ReadError, match=r"small\.nii\.gz.*shape.*img\.nii\.gz") as info:
        load_label_volume(tmp_path / "small.nii.gz", like=image)
    assert info.value.path.endswith("small.nii.gz")
    shifted = np.eye(4)
    shifted[0, 3] = 1.0
    _save(tmp_path / "moved.nii.gz", np.zeros((4, 4, 3), np.uint8), shifted)
    with pytest.raises(ReadError, match="affine"):
        load_label_volume(tmp_path / "moved.nii.gz", like=image)


# ---- write_nifti_like --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "image", "label"),
    [
        ("sct_spinalcord_mr", "t2.nii.gz", "t2_seg-manual.nii.gz"),
        ("openkbp_headneck_ct", "openkbp_pt_22_ct.nii.gz", "openkbp_pt_22_oars.nii.gz"),
        (
            "brats2015_deepmedic_mr",
            "brats_2013_pat0006_1_Flair_subtrMeanDivStd.nii.gz",
            "brats_2013_pat0006_1_OTMultiClass.nii.gz",
        ),
    ],
)
def test_write_label_round_trips_to_original_file(data, tmp_path, dataset, image, label):
    image_vol = load_volume(data(MEDVOL, dataset, "images", image))
    label_path = data(MEDVOL, dataset, "labels", label)
    label_vol = load_label_volume(label_path, like=image_vol)
    out = tmp_path / "out" / "label.nii.gz"
    write_nifti_like(out, label_vol.array, like=label_vol)
    original, written = nib.load(label_path), nib.load(out)
    assert written.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(written.dataobj), np.asarray(original.dataobj).astype(np.uint8))
    assert np.allclose(written.affine, original.affine, atol=1e-6)
    assert nib.aff2axcodes(written.affine) == nib.aff2axcodes(original.affine)
    assert [p.name for p in out.parent.iterdir()] == ["label.nii.gz"]
    # writing against the image volume (same grid) gives the same voxels
    write_nifti_like(tmp_path / "again.nii.gz", label_vol.array, like=image_vol)
    assert np.array_equal(
        np.asarray(nib.load(tmp_path / "again.nii.gz").dataobj), np.asarray(written.dataobj)
    )


def test_write_is_deterministic_and_checks_input(tmp_path):
    like = load_volume(_save(tmp_path / "img.nii.gz", np.zeros((3, 4, 5), np.float32)))
    mask = np.zeros((3, 4, 5), bool)
    mask[1, 2, 3] = True
    write_nifti_like(tmp_path / "a.nii.gz", mask, like)
    write_nifti_like(tmp_path / "b.nii.gz", mask, like)
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()
    with pytest.raises(ValueError, match="shape"):
        write_nifti_like(tmp_path / "c.nii.gz", np.zeros((3, 4, 4), np.uint8), like)
    with pytest.raises(ValueError, match="uint8"):
        write_nifti_like(tmp_path / "c.nii.gz", np.full((3, 4, 5), 300), like)
    with pytest.raises(ValueError, match="integer"):
        write_nifti_like(tmp_path / "c.nii.gz", np.zeros((3, 4, 5), np.float32), like)
    with pytest.raises(ValueError, match=r"\.nii"):
        write_nifti_like(tmp_path / "c.png", mask, like)
