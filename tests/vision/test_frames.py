"""Preprocessing and coordinate frames, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medground.vision.frames import Frame, check_box, prepare_image


def test_longest_side_to_256_and_zero_padding_bottom_right() -> None:
    image = np.zeros((100, 400), np.uint8)
    image[:, 200:] = 50  # left half 0, right half 50 -> after min-max: 0 and 1
    x, frame = prepare_image(image)
    assert x.shape == (3, 256, 256) and frame.resized == (64, 256) and frame.scale == 0.64
    assert torch.equal(x[:, 64:], torch.zeros(3, 192, 256))  # padding rows
    assert x[:, :64, :120].max() == 0 and x[:, :64, 136:].min() > 1 - 1e-6  # away from the edge
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])  # gray repeated


def test_rounding_of_the_short_side_and_upscaling() -> None:
    assert Frame(730, 750).resized == (249, 256)  # 730 * 256 / 750 = 249.17
    assert Frame(160, 160).resized == (256, 256) and Frame(160, 160).scale == 1.6
    assert Frame(3, 1000).resized == (1, 256)  # 0.768 rounds to 1


def test_flat_image_is_all_zero_not_nan() -> None:
    x, _ = prepare_image(np.full((10, 20, 3), 7.0))
    assert torch.equal(x, torch.zeros(3, 256, 256))


def test_box_to_model_uses_the_last_pixel_inside() -> None:
    frame = Frame(500, 1000)  # scale 0.256
    # [100, 50, 301, 151) holds pixels 100..300 x 50..150
    np.testing.assert_allclose(frame.box_to_model([100, 50, 301, 151]), [25.6, 12.8, 76.8, 38.4], rtol=1e-6)
    np.testing.assert_allclose(frame.box_from_model([25.6, 12.8, 76.8, 38.4]), [100, 50, 301, 151], rtol=1e-6)


def test_logits_back_to_the_input_size() -> None:
    frame = Frame(100, 400)  # resized (64, 256): rows 64.. are padding
    logits = torch.full((1, 256, 256), -5.0)
    logits[:, :64, :128] = 5.0  # the left half of the image
    out = frame.to_input(logits)
    assert out.shape == (1, 100, 400)
    assert (out[0, :, :195] > 0).all() and (out[0, :, 205:] < 0).all()


@pytest.mark.parametrize(
    "bad", [[1, 2, 3], [5, 5, 5, 9], [0, 0, 41, 10], [float("nan"), 0, 4, 4], [-1, 0, 4, 4]]
)
def test_bad_boxes_are_refused_with_the_image_size(bad) -> None:
    with pytest.raises(ValueError, match="box"):
        check_box(bad, 30, 40)


def test_bad_images_are_refused() -> None:
    with pytest.raises(ValueError, match="expected an"):
        prepare_image(np.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        prepare_image(np.full((4, 4), np.nan))
