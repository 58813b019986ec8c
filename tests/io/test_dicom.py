"""Tests of medground.io.dicom on the shared DICOM series, SEG and codec samples."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest

from medground.io import (
    ReadError,
    load_dicom_seg,
    load_dicom_series,
    load_label_volume,
    load_volume,
    write_nifti_like,
)

TCIA = ("dicom", "tcia_brain_tumor_progression_mr", "PGBM-001_1992-04-02")
PHANTOM = ("dicom", "rtutils_phantom_ct_rtstruct", "ct")


def _world_ras(ds, row, col):
    """DICOM PS3.3 C.7.6.2.1.1: pixel (row, col) -> patient LPS mm, then LPS -> RAS (negate x, y)."""
    iop = np.asarray(ds.ImageOrientationPatient, float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    lps = np.asarray(ds.ImagePositionPatient, float) + col * dc * iop[:3] + row * dr * iop[3:]
    return np.array([-lps[0], -lps[1], lps[2]])


def _check_pixels_at_world_positions(vol, folder, pixels=((0, 0), (100, 50), (250, 300))):
    inverse = np.linalg.inv(vol.affine)
    for path in sorted(folder.iterdir())[::5]:
        ds = pydicom.dcmread(path)
        values = pydicom.pixels.apply_rescale(ds.pixel_array, ds)
        for row, col in pixels:
            row, col = min(row, ds.Rows - 1), min(col, ds.Columns - 1)
            ijk = inverse[:3, :3] @ _world_ras(ds, row, col) + inverse[:3, 3]
            assert np.allclose(ijk, np.round(ijk), atol=1e-3), (path.name, ijk)
            assert vol.array[tuple(np.round(ijk).astype(int))] == pytest.approx(float(values[row, col]))


def test_oblique_mr_series_geometry(data):
    folder = data(*TCIA, "T1post")
    vol = load_dicom_series(folder)
    assert vol.array.dtype == np.float32 and vol.shape == (260, 320, 24)
    assert (float(vol.array.min()), float(vol.array.max())) == (0.0, 2505.0)  # MANIFEST: uint16 0-2505
    positions = sorted(
        (
            np.cross(*np.reshape(np.asarray(d.ImageOrientationPatient, float), (2, 3)))
            @ np.asarray(d.ImagePositionPatient, float)
        )
        for d in (pydicom.dcmread(p, stop_before_pixels=True) for p in folder.iterdir())
    )
    assert vol.spacing[:2] == pytest.approx((0.6875, 0.6875))
    assert vol.spacing[2] == pytest.approx(np.diff(positions).mean(), abs=1e-4)
    _check_pixels_at_world_positions(vol, folder)


def test_mask_series_on_the_same_grid(data):
    image = load_dicom_series(data(*TCIA, "T1post"))
    mask = load_dicom_series(data(*TCIA, "MaskTumor"))
    assert mask.shape == image.shape
    assert np.allclose(mask.affine, image.affine, atol=1e-3)
    assert int(np.count_nonzero(mask.array == 1)) == 6809  # MANIFEST
    assert set(np.unique(mask.array).tolist()) == {0.0, 1.0}
    assert int(np.count_nonzero(mask.array.any(axis=(0, 1)))) == 8  # tumour on 8 slices


def test_phantom_ct_in_hounsfield_units(data):
    folder = data(*PHANTOM)
    vol = load_dicom_series(folder)
    assert vol.shape == (512, 512, 5)
    assert vol.spacing == pytest.approx((0.488281, 0.488281, 5.0), abs=1e-6)
    reference = [
        pydicom.pixels.apply_rescale(pydicom.dcmread(p).pixel_array, pydicom.dcmread(p))
        for p in folder.iterdir()
    ]
    assert float(vol.array.min()) == -3024.0  # MANIFEST
    assert float(vol.array.max()) == max(float(r.max()) for r in reference)
    # slices at z = 60..80 mm, 5 mm apart, superior last in RAS+
    z = vol.affine[2, 3] + vol.affine[2, 2] * np.arange(5)
    assert z.tolist() == pytest.approx([60, 65, 70, 75, 80])
    _check_pixels_at_world_positions(vol, folder)


def test_file_order_and_extra_files_do_not_matter(data, tmp_path):
    src = data(*PHANTOM)
    files = sorted(
        src.iterdir(),
        key=lambda p: -float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]),
    )
    for i, path in enumerate(files):  # names now sort from superior to inferior
        shutil.copy(path, tmp_path / f"{i:02d}.dcm")
    (tmp_path / "README.txt").write_text("not dicom")
    shutil.copy(data("dicom", "rtutils_phantom_ct_rtstruct", "rtstruct", "rt.dcm"), tmp_path / "rt.dcm")
    assert np.array_equal(load_dicom_series(tmp_path).array, load_dicom_series(src).array)


def test_two_series_need_a_choice(data, tmp_path):
    t1 = sorted(data(*TCIA, "T1post").iterdir())
    mask = sorted(data(*TCIA, "MaskTumor").iterdir())
    for path in t1:
        shutil.copy(path, tmp_path / f"t1_{path.name}")
    for path in mask:
        shutil.copy(path, tmp_path / f"mask_{path.name}")
    uid = str(pydicom.dcmread(mask[0], stop_before_pixels=True).SeriesInstanceUID)
    with pytest.raises(ReadError, match=f"2 image series.*{uid}.*series_uid"):
        load_dicom_series(tmp_path)
    picked = load_dicom_series(tmp_path, series_uid=uid)
    assert int(np.count_nonzero(picked.array == 1)) == 6809
    with pytest.raises(ReadError, match="not found"):
        load_dicom_series(tmp_path, series_uid="1.2.3")


def test_missing_slice_and_duplicate_slice_raise(data, tmp_path):
    files = sorted(data(*PHANTOM).iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    gap = tmp_path / "gap"
    gap.mkdir()
    for path in files[:2] + files[3:]:
        shutil.copy(path, gap / path.name)
    with pytest.raises(ReadError, match="uneven slice gaps"):
        load_dicom_series(gap)
    dup = tmp_path / "dup"
    dup.mkdir()
    shutil.copy(files[0], dup / "a.dcm")
    shutil.copy(files[0], dup / "b.dcm")
    with pytest.raises(ReadError, match="share one position"):
        load_dicom_series(dup)


@pytest.mark.parametrize("keep", [0.5, 0.001])
def test_truncated_slice_raises(data, tmp_path, keep):
    files = sorted(data(*PHANTOM).iterdir())
    for path in files:
        shutil.copy(path, tmp_path / path.name)
    raw = files[2].read_bytes()
    (tmp_path / files[2].name).write_bytes(raw[: max(200, int(len(raw) * keep))])
    with pytest.raises(ReadError, match="truncated or corrupt") as info:
        load_dicom_series(tmp_path)
    assert info.value.path.endswith(files[2].name)


def test_no_dicom_and_not_a_folder(tmp_path, data):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ReadError, match="no DICOM image files"):
        load_dicom_series(tmp_path)
    with pytest.raises(ReadError, match="not a folder"):
        load_dicom_series(tmp_path / "notes.txt")
    only_rt = tmp_path / "rt"
    only_rt.mkdir()
    shutil.copy(data("dicom", "rtutils_phantom_ct_rtstruct", "rtstruct", "rt.dcm"), only_rt)
    with pytest.raises(ReadError, match="no DICOM image files"):
        load_dicom_series(only_rt)


@pytest.mark.parametrize(
    ("name", "package"), [("JPEG-lossy.dcm", "pylibjpeg"), ("MR_small_jpeg_ls_lossless.dcm", "pyjpegls")]
)
def test_missing_codec_names_syntax_and_package(data, tmp_path, name, package):
    path = data("dicom", "pydicom_test_files", name)
    ds = pydicom.dcmread(path)
    try:
        ds.pixel_array  # noqa: B018
    except Exception:
        pass
    else:
        pytest.skip(f"a decoder for {ds.file_meta.TransferSyntaxUID.name} is installed here")
    shutil.copy(path, tmp_path / name)
    with pytest.raises(ReadError) as info:
        load_dicom_series(tmp_path)
    assert ds.file_meta.TransferSyntaxUID.name in info.value.reason
    assert package in info.value.reason and "python-gdcm" in info.value.reason


def test_uncompressed_single_files_load(data, tmp_path):
    shutil.copy(data("dicom", "pydicom_test_files", "CT_small.dcm"), tmp_path)
    vol = load_dicom_series(tmp_path)
    ds = pydicom.dcmread(tmp_path / "CT_small.dcm")
    assert vol.shape[2] == 1 and sorted(vol.shape[:2]) == [128, 128]
    assert float(vol.array.min()) == float(pydicom.pixels.apply_rescale(ds.pixel_array, ds).min())


def test_dicom_seg(data):
    path = data("dicom", "pydicom_test_files", "liver_1frame.dcm")
    labels, names = load_dicom_seg(path)
    assert names == {1: "Liver"}
    assert labels.shape == (1, 512, 512) and labels.dtype == np.int32
    assert set(np.unique(labels).tolist()) == {0, 1}
    assert int(np.count_nonzero(labels)) == int(np.count_nonzero(pydicom.dcmread(path).pixel_array))


def test_dicom_seg_rejects_other_objects(data):
    with pytest.raises(ReadError, match="not a DICOM SEG"):
        load_dicom_seg(data("dicom", "pydicom_test_files", "CT_small.dcm"))


def test_dicom_mask_written_as_nifti_round_trips(data, tmp_path):
    image = load_dicom_series(data(*TCIA, "T1post"))
    mask = load_dicom_series(data(*TCIA, "MaskTumor"))
    write_nifti_like(tmp_path / "mask.nii.gz", mask.array.astype(np.uint8), like=image)
    write_nifti_like(tmp_path / "ref.nii.gz", np.zeros(image.shape, np.uint8), like=image)
    back = load_label_volume(tmp_path / "mask.nii.gz", like=load_volume(tmp_path / "ref.nii.gz"))
    assert np.array_equal(back.array, mask.array.astype(np.int32))
    assert np.allclose(back.affine, image.affine, atol=1e-4)
    assert back.original_axcodes == image.original_axcodes
