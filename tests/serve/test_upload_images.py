"""Uploaded images are read by medground.io's rules, as the same file on disk would be."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi import HTTPException
from PIL import Image

from medground.io import read_image
from medground.serve.app import _array, _png


@pytest.mark.parametrize("mode", ["L", "RGB", "I;16", "P", "LA", "RGBA", "1"])
def test_an_upload_reads_as_its_file_would(tmp_path, mode):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(100, 40000, (6, 5), dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / "upload.png"
    image.save(path)
    with Image.open(path) as upload:
        upload.load()
        assert np.array_equal(_array(upload, "image"), read_image(path))


def test_an_unreadable_upload_is_a_400_naming_it():
    values = np.ones((4, 4), dtype=np.float32)
    values[0, 0] = np.nan  # a float TIFF with a NaN pixel: io refuses it, the server says 400
    with pytest.raises(HTTPException) as caught:
        _array(Image.fromarray(values), "support image 2")
    assert caught.value.status_code == 400 and "support image 2" in caught.value.detail
    assert "NaN" in caught.value.detail


def test_masks_leave_as_png_through_medground_io():
    mask = np.zeros((4, 6), dtype=np.uint8)
    mask[1:3, 2:5] = 255
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(_png(mask)))))
    assert np.array_equal(decoded, mask)
