"""LLaVA-1.5's padded-square dialect, by hand and against a padded image built as LLaVA's expand2square does."""

import numpy as np
import pytest
from PIL import Image

from medground.grounding import Grounded, get_dialect
from medground.types import Box

LLAVA = get_dialect("llava-1.5-square")


def test_wide_image_by_hand():
    # 200 x 100 -> a 200 x 200 square, the image pasted at (0, (200 - 100) // 2) = (0, 50).
    # box [20, 10, 60, 50): x 20 / 200 = 0.1, y (10 + 50) / 200 = 0.3, x1 60 / 200 = 0.3, y1 (50 + 50) / 200 = 0.5
    text = LLAVA.ground("liver", [Box(20, 10, 60, 50)], 200, 100)
    assert text == "liver [0.1, 0.3, 0.3, 0.5]"
    assert LLAVA.parse(text, 200, 100) == [Grounded("liver", Box(20, 10, 60, 50))]


def test_tall_image_by_hand_rounds_to_two_decimals():
    # 100 x 300 -> a 300 x 300 square, pasted at ((300 - 100) // 2, 0) = (100, 0).
    # box [10, 30, 40, 90): (10 + 100) / 300 = 0.3667 -> 0.37, 30 / 300 = 0.1, 140 / 300 = 0.4667 -> 0.47, 0.3
    assert LLAVA.box(Box(10, 30, 40, 90), 100, 300) == "[0.37, 0.1, 0.47, 0.3]"
    # back: 0.37 * 300 - 100 = 11, 0.1 * 300 = 30, 0.47 * 300 - 100 = 41, 0.3 * 300 = 90 (within 300 / 200 px)
    assert LLAVA.parse("[0.37, 0.1, 0.47, 0.3]", 100, 300)[0].box == Box(11, 30, 41, 90)
    # an odd difference: 201 x 100 pastes at y = 101 // 2 = 50; the full image is [0, 0.25, 1.0, 0.75]
    assert LLAVA.box(Box(0, 0, 201, 100), 201, 100) == "[0.0, 0.25, 1.0, 0.75]"


def test_several_boxes_and_labels():
    found = [
        Grounded("hip", Box(0, 0, 100, 50)),
        Grounded("hip", Box(100, 50, 200, 100)),
        Grounded(None, Box(0, 0, 200, 100)),
    ]
    text = LLAVA.render(found, 200, 100)
    assert text == "hip [0.0, 0.25, 0.5, 0.5], [0.5, 0.5, 1.0, 0.75] [0.0, 0.25, 1.0, 0.75]"
    assert LLAVA.parse(text, 200, 100) == found
    # LLaVA-1.5's own data: a bare box in a question, integer lists of other dialects are not boxes
    question = "Please provide a short description for this region: [0.61, 0.36, 0.92, 0.83]"
    assert len(LLAVA.parse(question, 640, 480)) == 1
    assert LLAVA.parse("<box>[[243, 469, 558, 746]]</box>", 640, 480) == []


def _expand2square(image: Image.Image, background: int) -> Image.Image:
    """LLaVA's ``expand2square`` (haotian-liu/LLaVA llava/mm_utils.py at c121f043), written again from its text."""
    width, height = image.size
    if width == height:
        return image
    if width > height:
        result = Image.new(image.mode, (width, width), background)
        result.paste(image, (0, (width - height) // 2))
        return result
    result = Image.new(image.mode, (height, height), background)
    result.paste(image, ((height - width) // 2, 0))
    return result


@pytest.mark.parametrize(
    ("box", "size"),
    [((20, 10, 60, 50), (200, 100)), ((10, 30, 40, 90), (100, 300)), ((5, 0, 7, 33), (51, 33))],
)
def test_numbers_are_the_box_in_llavas_padded_square(box, size):
    w, h = size
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[box[1] : box[3], box[0] : box[2]] = 255
    square = np.asarray(_expand2square(Image.fromarray(mask), 0))
    rows, cols = np.nonzero(square)
    side = square.shape[0]
    expected = [cols.min() / side, rows.min() / side, (cols.max() + 1) / side, (rows.max() + 1) / side]
    assert LLAVA.box(Box(*box), w, h) == "[" + ", ".join(str(round(v, 2)) for v in expected) + "]"
