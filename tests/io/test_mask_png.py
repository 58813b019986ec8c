import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from medground.io import encode_png, write_png


def _idat(png: bytes) -> bytes:
    pos, data = 8, b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        if png[pos + 4 : pos + 8] == b"IDAT":
            data += png[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return data


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (584, 565), (130, 1)])
@pytest.mark.parametrize("kind", ["empty", "full", "top", "bottom", "middle", "noise"])
def test_sparse_mask_png_decodes_to_0_255_and_has_a_valid_zlib_stream(shape, kind):
    rng = np.random.default_rng(0)
    mask = np.zeros(shape, bool)
    h = shape[0]
    rows = {
        "empty": slice(0, 0),
        "full": slice(0, h),
        "top": slice(0, 1),
        "bottom": slice(h - 1, h),
        "middle": slice(h // 3, max(h // 3 + 1, 2 * h // 3)),
        "noise": slice(0, h),
    }[kind]
    mask[rows] = True if kind != "noise" else rng.random(mask[rows].shape) < 0.4
    png = encode_png(mask)
    decoded = np.asarray(Image.open(io.BytesIO(png)))
    assert decoded.dtype == np.uint8 and np.array_equal(decoded, np.where(mask, 255, 0))
    raw = zlib.decompress(_idat(png))  # zlib checks the Adler-32 we computed
    assert len(raw) == shape[0] * (shape[1] + 1)
    assert encode_png(mask) == png  # same mask, same bytes


def test_written_mask_equals_the_array(tmp_path):
    mask = np.zeros((50, 60), bool)
    mask[10:20, 5:9] = True
    write_png(tmp_path / "m.png", mask, durable=False)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "m.png")) > 0, mask)


def test_crop_placed_in_the_image_frame():
    from medground.io import encode_mask_png

    crop = np.array([[1, 0, 1], [0, 1, 0]], bool)
    png = encode_mask_png(crop, top=3, left=5, height=8, width=10)
    expected = np.zeros((8, 10), np.uint8)
    expected[3:5, 5:8] = np.where(crop, 255, 0)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), expected)
    with pytest.raises(ValueError, match="does not fit"):
        encode_mask_png(crop, top=7, left=0, height=8, width=10)


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (40, 33, 3), (9, 2, 4), (1, 9, 3)])
def test_fast_png_holds_the_exact_pixels_and_is_deterministic(shape):
    array = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    png = encode_png(array, fast=True)
    image = Image.open(io.BytesIO(png))
    assert image.mode == ("L" if len(shape) == 2 else {3: "RGB", 4: "RGBA"}[shape[2]])
    assert np.array_equal(np.asarray(image), array)
    assert encode_png(array.copy(), fast=True) == png


def test_fast_png_leaves_16_bit_to_pillow():
    array = np.array([[0, 300], [65535, 7]], dtype=np.uint16)
    assert encode_png(array, fast=True) == encode_png(array)
