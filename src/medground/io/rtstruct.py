"""DICOM RTSTRUCT contours -> voxel masks on a series' canonical grid.

Each CLOSED_PLANAR contour is a polygon of LPS mm points on one slice. Points go LPS -> RAS (negate x, y)
-> canonical voxel indices through ``inv(series.affine)``; the axis along which a contour's indices are
constant is its slice axis, and a voxel is inside when its centre is inside the polygon
(:func:`medground.io.polygons.fill_polygon`, voxel indices being centres). Several contours of one ROI
on one slice combine by XOR, so a contour inside another makes a hole (the usual RTSTRUCT reading).
POINT/OPEN contours, and closed ones of fewer than three points, are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medground.io.errors import ReadError, require_file
from medground.io.nifti import Volume
from medground.io.polygons import fill_polygon

if TYPE_CHECKING:  # pydicom is imported where a file is read: it costs ~0.2 s at start-up
    import pydicom

__all__ = ["rasterize_rtstruct"]

_PLANE_TOL = 0.05  # voxels: how far a contour may sit from a slice centre


def _read_rtstruct(path: Path) -> pydicom.Dataset:
    import pydicom

    try:
        ds = pydicom.dcmread(path, force=True)  # some RTSTRUCT files lack the 128-byte preamble
    except Exception as exc:
        raise ReadError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    if "ROIContourSequence" not in ds or "StructureSetROISequence" not in ds:
        raise ReadError(path, "not an RTSTRUCT: it has no ROIContourSequence/StructureSetROISequence")
    return ds


def _contour_voxels(path: Path, points_lps: np.ndarray, series: Volume) -> tuple[int, int, np.ndarray]:
    """-> (slice axis, slice index, (N, 2) in-plane voxel coordinates in the other two axes' order)."""
    ras = points_lps * np.array([-1.0, -1.0, 1.0])
    inverse = np.linalg.inv(series.affine)
    ijk = ras @ inverse[:3, :3].T + inverse[:3, 3]
    axis = int(np.argmin(np.ptp(ijk, axis=0)))
    level = float(np.mean(ijk[:, axis]))
    index = int(round(level))
    if np.ptp(ijk[:, axis]) > 2 * _PLANE_TOL or abs(level - index) > _PLANE_TOL:
        raise ReadError(
            path,
            f"a contour does not lie on a slice of the series (voxel position {level:.2f} "
            f"along axis {axis}); is this RTSTRUCT drawn on another series?",
        )
    in_plane = [a for a in range(3) if a != axis]
    return axis, index, ijk[:, in_plane]


def _roi_names(ds: pydicom.Dataset) -> dict[int, str]:
    return {
        int(item.ROINumber): str(item.get("ROIName", f"ROI-{item.ROINumber}"))
        for item in ds.StructureSetROISequence
    }


def rasterize_rtstruct(rtstruct_path: str | Path, series: Volume) -> dict[str, np.ndarray]:
    """ROI name -> bool (X, Y, Z) mask on ``series``' canonical grid (the series the RTSTRUCT was drawn on).

    ROIs without closed contours give an all-False mask. Raises ReadError for a file that is not an
    RTSTRUCT or a contour that does not lie on one of the series' slices (off-plane or outside the slab). The frame of reference is not
    checked: pass the series the structure set references.
    """
    path = require_file(rtstruct_path)
    ds = _read_rtstruct(path)
    names = _roi_names(ds)
    masks = {name: np.zeros(series.shape, dtype=bool) for name in names.values()}
    for roi in ds.ROIContourSequence:
        name = names.get(int(roi.ReferencedROINumber), f"ROI-{roi.ReferencedROINumber}")
        mask = masks.setdefault(name, np.zeros(series.shape, dtype=bool))
        for contour in roi.get("ContourSequence", []):
            if str(contour.get("ContourGeometricType", "CLOSED_PLANAR")) != "CLOSED_PLANAR":
                continue
            points = np.asarray(contour.ContourData, dtype=np.float64).reshape(-1, 3)
            axis, index, polygon = _contour_voxels(path, points, series)
            if not 0 <= index < series.shape[axis]:
                raise ReadError(
                    path,
                    f"ROI {name!r} has a contour outside the series (slice {index} along "
                    f"axis {axis}, the series has {series.shape[axis]}); is this RTSTRUCT "
                    "drawn on another series?",
                )
            if len(polygon) < 3:  # a closed contour of one or two points encloses no voxel centre
                continue
            view = np.moveaxis(mask, axis, 0)[index]  # (the two in-plane axes in order), writes through
            view ^= fill_polygon(view.shape, polygon)
    return masks
