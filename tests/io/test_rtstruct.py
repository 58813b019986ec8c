"""Tests of medground.io.rtstruct on the rt-utils phantom CT and its RTSTRUCT (4 ROIs on z = 60, 65, 70)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from medground.io import ReadError, load_dicom_series, rasterize_rtstruct

PHANTOM = ("dicom", "rtutils_phantom_ct_rtstruct")


def _shoelace_and_perimeter(points_xy):
    x, y = points_xy[:, 0], points_xy[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    perimeter = np.linalg.norm(np.diff(np.vstack([points_xy, points_xy[:1]]), axis=0), axis=1).sum()
    return area, perimeter


def test_phantom_rois_on_their_slices(data):
    ct = load_dicom_series(data(*PHANTOM, "ct"))
    rt_path = data(*PHANTOM, "rtstruct", "rt.dcm")
    masks = rasterize_rtstruct(rt_path, ct)
    assert sorted(masks) == ["ROI-1", "ROI-2", "ROI-3", "ROI-4"]
    z_mm = ct.affine[2, 3] + ct.affine[2, 2] * np.arange(ct.shape[2])  # 60, 65, 70, 75, 80
    pixel_area = ct.spacing[0] * ct.spacing[1]
    rt = pydicom.dcmread(rt_path)
    names = {int(r.ROINumber): str(r.ROIName) for r in rt.StructureSetROISequence}
    for roi in rt.ROIContourSequence:
        mask = masks[names[int(roi.ReferencedROINumber)]]
        assert mask.shape == ct.shape and mask.dtype == bool
        assert not mask[..., 3:].any()  # MANIFEST: contoured on z = 60, 65, 70 only
        for contour in roi.ContourSequence:
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            k = int(np.argmin(np.abs(z_mm - points[0, 2])))
            area, perimeter = _shoelace_and_perimeter(points[:, :2])
            count = int(mask[..., k].sum())
            # pixel-centre sampling: error bounded by the boundary band, half a pixel each side
            assert abs(count - area / pixel_area) <= 0.5 * perimeter / ct.spacing[0] + 5
        # the contours are drawn inside a water phantom
        assert abs(float(ct.array[mask].mean())) < 50


def test_not_an_rtstruct_raises(data):
    ct = load_dicom_series(data(*PHANTOM, "ct"))
    with pytest.raises(ReadError, match="not an RTSTRUCT"):
        rasterize_rtstruct(data("dicom", "pydicom_test_files", "CT_small.dcm"), ct)


def test_structure_set_of_another_series_raises(data):
    # pydicom's rtstruct.dcm belongs to another scan: its contours at z = -200 mm are outside the phantom slab
    ct = load_dicom_series(data(*PHANTOM, "ct"))
    with pytest.raises(ReadError, match="outside the series"):
        rasterize_rtstruct(data("dicom", "pydicom_test_files", "rtstruct.dcm"), ct)


def test_contour_between_slices_raises(data, tmp_path):
    ct = load_dicom_series(data(*PHANTOM, "ct"))
    rt = pydicom.dcmread(data(*PHANTOM, "rtstruct", "rt.dcm"))
    contour = rt.ROIContourSequence[0].ContourSequence[0]
    points = np.asarray(contour.ContourData, float).reshape(-1, 3)
    points[:, 2] += 2.5  # half way between two 5 mm slices
    contour.ContourData = [f"{v:.3f}" for v in points.ravel()]
    rt.save_as(tmp_path / "moved.dcm")
    with pytest.raises(ReadError, match="does not lie on a slice"):
        rasterize_rtstruct(tmp_path / "moved.dcm", ct)
