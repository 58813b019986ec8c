"""Polygons -> pixel masks: one rasteriser for every reader that gets outlines (RTSTRUCT contours, COCO).

Convention: a polygon is an (N, 2) array of vertices in *array index* coordinates of the plane,
(axis 0, axis 1) = (row, column) for an image; pixel (i, j) is the unit cell centred on (i, j), and it
is inside when its centre lies inside the polygon (matplotlib's even-odd point-in-polygon test; a centre
exactly on an edge may go either way). Readers whose coordinates put pixel (i, j) on the cell
[i, i + 1) x [j, j + 1) (COCO) subtract 0.5 first.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fill_polygon"]


def fill_polygon(shape: tuple[int, int], vertices: np.ndarray) -> np.ndarray:
    """Bool ``shape`` plane, True where the pixel centre (i, j) lies inside ``vertices``.

    ``vertices``: (N, 2) float, (axis 0, axis 1) index coordinates, N >= 3; the polygon is closed
    implicitly; parts outside the plane are clipped. Raises ValueError for a malformed array.
    """
    from matplotlib.path import Path as _MplPath  # here, not at the top: matplotlib costs ~0.2 s to import

    polygon = np.asarray(vertices, dtype=np.float64)
    if polygon.ndim != 2 or polygon.shape[1] != 2 or polygon.shape[0] < 3:
        raise ValueError(f"a polygon needs an (N, 2) array of N >= 3 vertices, got shape {polygon.shape}")
    if not np.isfinite(polygon).all():
        raise ValueError("a polygon vertex is not a finite number")
    lo = np.clip(np.floor(polygon.min(axis=0)).astype(int), 0, None)
    hi = np.minimum(np.ceil(polygon.max(axis=0)).astype(int) + 1, shape)
    plane = np.zeros(shape, dtype=bool)
    if np.any(hi <= lo):
        return plane
    uu, vv = np.meshgrid(np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]), indexing="ij")
    inside = _MplPath(polygon).contains_points(np.column_stack([uu.ravel(), vv.ravel()]))
    plane[lo[0] : hi[0], lo[1] : hi[1]] = inside.reshape(uu.shape)
    return plane
