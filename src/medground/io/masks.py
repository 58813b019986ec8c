"""Region masks of a build, in either of their two forms: a 0/255 PNG file or COCO RLE.

A region of a record (``records/*.jsonl``, ``"regions"``) carries its mask as one of

- ``"mask": "masks/<image id>/<key>_<instance>.png"``: an 8-bit grey 0/255 PNG of the image's size,
  relative to the build folder (written by :func:`medground.io.write_mask_png`);
- ``"rle": {"size": [H, W], "counts": "..."}``: COCO's compressed RLE exactly as pycocotools writes it
  (``pycocotools.mask.encode`` of the (H, W) 0/1 array in Fortran order, ``counts`` decoded as ASCII):
  alternating run lengths of 0 and 1 pixels, background first, over the pixels in column-major order
  (down the first column, then the second ...), coded as pycocotools' LEB128-like string.

:func:`encode_rle` / :func:`decode_rle` convert between arrays and RLE (through pycocotools, never a
hand-written coder); :func:`region_mask` reads a region in either form and is what every consumer of
build masks (report, ICL tasks, exports) calls. Arrays are ``(H, W)``, row 0 at the top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medground.io.errors import ReadError
from medground.io.images import read_mask

__all__ = ["MASK_FORMATS", "decode_rle", "encode_rle", "region_mask", "rle_counts"]

MASK_FORMATS: tuple[str, ...] = ("png", "rle")
"""How a build stores region masks: one PNG file per region, or COCO RLE inside the region's record."""


def encode_rle(
    mask: np.ndarray, *, top: int = 0, left: int = 0, height: int | None = None, width: int | None = None
) -> dict[str, Any]:
    """COCO compressed RLE ``{"size": [H, W], "counts": str}`` of a mask (non-zero = inside).

    ``mask`` is (h, w) bool or integer placed with its top-left pixel at row ``top``, column ``left`` of
    a ``height`` x ``width`` image (default: the mask's own size at 0, 0), as in
    :func:`medground.io.encode_mask_png`, so a region kept as a crop of its box is encoded image-sized.
    The counts are pycocotools' bytes as ASCII text (JSON-ready); ``pycocotools.mask.decode`` reads the
    dict back once ``counts`` is encoded to bytes.
    """
    from pycocotools import mask as coco_mask  # here, not at the top: keeps `medground --help` fast

    crop = np.asarray(mask)
    if crop.ndim != 2:
        raise ValueError(f"encode_rle takes a 2D (H, W) mask, got shape {crop.shape}")
    rows, cols = crop.shape
    height = rows if height is None else height
    width = cols if width is None else width
    if top < 0 or left < 0 or top + rows > height or left + cols > width:
        raise ValueError(
            f"a {rows}x{cols} mask at row {top}, column {left} does not fit a {height}x{width} image"
        )
    full = np.zeros((height, width), dtype=np.uint8, order="F")
    full[top : top + rows, left : left + cols] = crop != 0
    rle = coco_mask.encode(full)
    return {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}


def rle_counts(text: str) -> list[int]:
    """Run lengths of a compressed RLE string, read to check it before pycocotools decodes it (its C
    decoder trusts the counts and writes past its buffer when they cover more than H x W pixels).

    The string codes each run in 5-bit groups, low first, as characters ``'0' + group`` (bit 5: more
    groups follow; bit 4 of the last group: sign); from the third run on, the value is the difference
    to the run two before it (pycocotools' ``rleFrString``). ValueError on a malformed string.
    """
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise ValueError("compressed RLE counts end in the middle of a number")
            code = ord(text[position]) - 48
            if not 0 <= code < 64:
                raise ValueError(f"compressed RLE counts hold {text[position]!r}, outside '0'..'o'")
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def _check_counts(counts: list[int], height: int, width: int) -> None:
    if any(c < 0 for c in counts):
        raise ValueError("RLE counts hold a negative run length")
    if sum(counts) != height * width:
        raise ValueError(
            f"RLE counts cover {sum(counts)} pixels, the {width}x{height} mask has {height * width}"
        )


def decode_rle(rle: Any) -> np.ndarray:
    """``(H, W)`` bool mask of a COCO RLE ``{"size": [H, W], "counts": str | bytes | list[int]}``.

    ``counts`` may be the compressed string (as :func:`encode_rle` and COCO files write it) or COCO's
    uncompressed list of run lengths. The counts are checked to cover exactly H x W pixels first;
    ValueError says what is wrong with a malformed RLE.
    """
    from pycocotools import mask as coco_mask

    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("an RLE is a JSON object {'size': [height, width], 'counts': ...}")
    size = rle["size"]
    if not (
        isinstance(size, list | tuple)
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)
    ):
        raise ValueError(f"RLE size {size!r} is not [height, width] of non-negative integers")
    height, width = int(size[0]), int(size[1])
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if isinstance(counts, str):
        _check_counts(rle_counts(counts), height, width)
        coded = {"size": [height, width], "counts": counts.encode("ascii")}
    elif isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        _check_counts(counts, height, width)
        coded = coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    else:
        raise ValueError("RLE counts must be a compressed string or a list of integers")
    if height * width == 0:
        return np.zeros((height, width), dtype=bool)
    return np.ascontiguousarray(coco_mask.decode(coded)).astype(bool)


def region_mask(root: str | Path, region: dict[str, Any], where: str | Path | None = None) -> np.ndarray:
    """``(H, W)`` bool mask of a build region, from its ``"rle"`` or its ``"mask"`` PNG under ``root``.

    ``where`` names the record in errors (default: ``root``). Raises ReadError for a region with
    neither form, a malformed RLE, or a missing or unreadable PNG (the PNG's own path and reason).
    """
    if region.get("rle") is not None:
        try:
            return decode_rle(region["rle"])
        except ValueError as error:
            raise ReadError(where or root, f"region {region.get('key')!r}: bad RLE ({error})") from error
    if region.get("mask"):
        return read_mask(Path(root) / region["mask"]) > 0
    raise ReadError(where or root, f"region {region.get('key')!r} has neither a 'mask' file nor an 'rle'")
