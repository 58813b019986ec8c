import numpy as np
import pytest

from medground.types import Box, tight_box


def test_tight_box_is_exclusive_on_the_right_and_bottom():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True  # rows 2..4, columns 3..8
    assert tight_box(mask) == Box(3, 2, 9, 5)


def test_single_pixel_box_has_size_one():
    mask = np.zeros((4, 4), bool)
    mask[3, 0] = True
    box = tight_box(mask)
    assert box == Box(0, 3, 1, 4) and box.area == 1


def test_empty_mask_has_no_box():
    assert tight_box(np.zeros((5, 5), bool)) is None


def test_box_rejects_degenerate_and_negative():
    with pytest.raises(ValueError):
        Box(3, 3, 3, 5)
    with pytest.raises(ValueError):
        Box(-1, 0, 2, 2)
    with pytest.raises(TypeError):
        Box(0.5, 0, 2, 2)


def test_iou_by_hand():
    a, b = Box(0, 0, 4, 4), Box(2, 2, 6, 6)
    # intersection 2x2 = 4, union 16 + 16 - 4 = 28
    assert a.iou(b) == pytest.approx(4 / 28)
    assert a.iou(a) == 1.0
    assert a.iou(Box(10, 10, 11, 11)) == 0.0
