"""Tests of medground.io.display: slice orientation, spacing, CT windows and MR percentiles."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medground.io import (
    CT_WINDOWS,
    DEFAULT_CT_WINDOW,
    axis_length,
    ct_window,
    load_label_volume,
    load_volume,
    mr_percentiles,
    normalize_mr,
    rescale_to_uint8,
    slice_spacing,
    slice_volume,
    stack_slices,
    window_ct,
)


def _pil(path):
    with Image.open(path) as image:
        return np.array(image)


def _one_voxel_volume():
    # RAS+ array (X=4, Y=3, Z=2) with one voxel at the patient's far right (x=3), posterior (y=0), superior (z=1)
    a = np.zeros((4, 3, 2), np.int16)
    a[3, 0, 1] = 1
    return a


def test_axial_slice_by_hand():
    d = slice_volume(_one_voxel_volume(), "axial", 1)
    # rows anterior -> posterior: y=0 (posterior) is the last row 2; columns R -> L: x=3 is column 0
    assert d.shape == (3, 4) and d.dtype == np.int16
    assert list(zip(*np.nonzero(d), strict=True)) == [(2, 0)]
    assert not slice_volume(_one_voxel_volume(), "axial", 0).any()


def test_coronal_slice_by_hand():
    d = slice_volume(_one_voxel_volume(), "coronal", 0)
    # rows superior -> inferior: z=1 is row 0; columns R -> L: x=3 is column 0
    assert d.shape == (2, 4)
    assert list(zip(*np.nonzero(d), strict=True)) == [(0, 0)]


def test_sagittal_slice_by_hand():
    d = slice_volume(_one_voxel_volume(), "sagittal", 3)
    # rows superior -> inferior: z=1 is row 0; columns anterior -> posterior: y=0 is the last column 2
    assert d.shape == (2, 3)
    assert list(zip(*np.nonzero(d), strict=True)) == [(0, 2)]


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_stack_slices_inverts_slice_volume(axis):
    a = np.random.default_rng(2).integers(0, 100, size=(4, 5, 6))
    n = axis_length(a.shape, axis)
    assert np.array_equal(stack_slices([slice_volume(a, axis, i) for i in range(n)], axis), a)


def test_axis_length_and_slice_spacing():
    assert [axis_length((4, 5, 6), ax) for ax in ("axial", "coronal", "sagittal")] == [6, 5, 4]
    assert slice_spacing((1.0, 2.0, 3.0), "axial") == (2.0, 1.0)
    assert slice_spacing((1.0, 2.0, 3.0), "coronal") == (3.0, 1.0)
    assert slice_spacing((1.0, 2.0, 3.0), "sagittal") == (3.0, 2.0)


def test_bad_axis_and_index():
    with pytest.raises(ValueError, match="Did you mean 'axial'"):
        slice_volume(np.zeros((2, 2, 2)), "axail", 0)
    with pytest.raises(IndexError, match=r"0\.\.1"):
        slice_volume(np.zeros((2, 2, 2)), "axial", 2)
    with pytest.raises(ValueError, match="3D"):
        slice_volume(np.zeros((2, 2)), "axial", 0)


def test_ct_window_arithmetic_by_hand():
    hu = np.array([-1000.0, -160.0, -60.0, 40.0, 240.0, 3000.0])
    # (hu + 160) / 400 * 255 -> 0, 0, 63.75 -> 64, 127.5 -> 128 (half up), 255, clipped 255
    assert window_ct(hu, 40, 400).tolist() == [0, 0, 64, 128, 255, 255]
    assert window_ct(hu, 40, 400).dtype == np.uint8
    # lung: -1350 -> 0, 150 -> 255
    assert window_ct(np.array([-1350.0, 150.0]), *CT_WINDOWS["lung"]).tolist() == [0, 255]
    with pytest.raises(ValueError, match="width"):
        window_ct(hu, 40, 0)


def test_ct_presets():
    assert DEFAULT_CT_WINDOW == "soft-tissue" and CT_WINDOWS["soft-tissue"] == (40.0, 400.0)
    assert CT_WINDOWS["lung"] == (-600.0, 1500.0) and CT_WINDOWS["bone"] == (400.0, 1800.0)
    assert CT_WINDOWS["brain"] == (40.0, 80.0)
    assert {"abdomen", "mediastinum", "liver"} <= set(CT_WINDOWS)
    assert ct_window("bone") == (400.0, 1800.0)
    with pytest.raises(ValueError, match="Did you mean 'lung'"):
        ct_window("lungs")


def test_rescale_by_hand_and_degenerate():
    assert rescale_to_uint8(np.array([5.0, 10.0, 15.0, 20.0, 25.0]), 10.0, 20.0).tolist() == [
        0,
        0,
        128,
        255,
        255,
    ]
    assert not rescale_to_uint8(np.ones(3), 4.0, 4.0).any()
    zeros = np.zeros((2, 3, 4))
    assert mr_percentiles(zeros) == (0.0, 0.0)
    out = normalize_mr(zeros)
    assert out.dtype == np.uint8 and out.shape == zeros.shape and not out.any()
    with pytest.raises(ValueError, match="lower"):
        mr_percentiles(zeros, 60, 40)


def test_mr_percentiles_use_nonzero_voxels(data):
    vol = load_volume(data("medvol", "brats2021_sammed3d_mr", "images", "BraTS2021_01646.nii.gz"))
    lo, hi = mr_percentiles(vol.array)
    a = vol.array.astype(np.float64)
    expect = np.percentile(a[a != 0], [0.5, 99.5])
    assert (lo, hi) == pytest.approx(tuple(expect))
    assert lo > np.percentile(a, 0.5)  # zeros (background) are left out
    assert (round(lo, 2), round(hi, 2)) == (8.80, 547.53)  # medseg MANIFEST, brats2021_flair_mr


def test_slices_match_the_published_medseg_pngs(data):
    # medseg/brats2021_flair_mr PNGs are np.rot90 of the RAS array (patient left on the image left),
    # rescaled with the same non-zero percentiles: our radiological slice is their left-right mirror.
    vol = load_volume(data("medvol", "brats2021_sammed3d_mr", "images", "BraTS2021_01646.nii.gz"))
    labels = load_label_volume(
        data("medvol", "brats2021_sammed3d_mr", "labels", "BraTS2021_01646.nii.gz"), like=vol
    )
    lo, hi = mr_percentiles(vol.array)
    folder = data("medseg", "brats2021_flair_mr")
    for z in (42, 76):
        png = _pil(folder / "images" / f"BraTS2021_01646_z{z:03d}.png").astype(int)
        mine = rescale_to_uint8(slice_volume(vol.array, "axial", z), lo, hi).astype(int)
        assert np.abs(np.fliplr(mine) - png).max() <= 1
        mask = _pil(folder / "masks" / f"BraTS2021_01646_z{z:03d}_edema.png")
        assert np.array_equal(np.fliplr(slice_volume(labels.array, "axial", z)) > 0, mask > 0)
