"""Tests of medground.io.fill_polygon: pixel-centre rule, holes by the caller, clipping, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from medground.io import fill_polygon


def test_axis_aligned_rectangle_covers_the_centres_inside():
    # corners (1.5, 2.5) .. (4.5, 7.5): centres 2, 3, 4 (rows) and 3..7 (columns) are inside
    mask = fill_polygon((8, 10), np.array([[1.5, 2.5], [1.5, 7.5], [4.5, 7.5], [4.5, 2.5]]))
    expected = np.zeros((8, 10), bool)
    expected[2:5, 3:8] = True
    assert mask.dtype == bool and mask.shape == (8, 10)
    np.testing.assert_array_equal(mask, expected)


def test_axis_zero_is_the_first_coordinate():
    # a tall thin triangle along axis 0: rows 0..8, one column wide near the tip
    mask = fill_polygon((10, 10), np.array([[-0.5, 4.5], [9.5, 3.5], [9.5, 5.5]]))
    assert mask[:, :3].sum() == 0 and mask[:, 6:].sum() == 0
    assert mask[9, 4] and mask[9, 5] and not mask[9, 3]
    assert mask[8].sum() >= mask[2].sum()


def test_right_triangle_count_by_hand():
    # x + y < 5.5 with centres at integer (i, j), 0 <= i, j: pairs with i + j <= 5 -> 21 pixels
    mask = fill_polygon((10, 10), np.array([[-0.5, -0.5], [-0.5, 6.0], [6.0, -0.5]]))
    ii, jj = np.indices((10, 10))
    np.testing.assert_array_equal(mask, ii + jj <= 5)
    assert mask.sum() == 21


def test_polygon_is_clipped_to_the_plane():
    mask = fill_polygon((4, 4), np.array([[-10.0, -10.0], [-10.0, 1.5], [1.5, 1.5], [1.5, -10.0]]))
    expected = np.zeros((4, 4), bool)
    expected[:2, :2] = True
    np.testing.assert_array_equal(mask, expected)
    outside = fill_polygon((4, 4), np.array([[10.0, 10.0], [10.0, 12.0], [12.0, 12.0]]))
    assert not outside.any()


@pytest.mark.parametrize(
    "vertices",
    [np.zeros((2, 2)), np.zeros((4, 3)), np.array([[0.0, 0.0], [1.0, np.nan], [2.0, 0.0]])],
)
def test_malformed_polygons_are_clear_errors(vertices):
    with pytest.raises(ValueError, match="polygon"):
        fill_polygon((4, 4), vertices)
