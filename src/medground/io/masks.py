"""Region masks of a build, in either of their two forms: a 0/255 PNG file or COCO RLE.

A region of a record (``records/*.jsonl``, ``"regions"``) carries its mask as one of

- ``"mask": "masks/<image id>/<key>_<instance>.png"``: an 8-bit grey 0/255 PNG of the image's size,
  relative to the build folder (written by :func:`medground.io.write_mask_png`);
- ``"rle": {"size": [H, W], "counts": "..."}``: COCO's compressed RLE exactly as pycocotools writes it
  (``pycocotools.mask.encode`` of the (H, W) 0/1 array in Fortran order, ``counts`` decoded as ASCII):
  alternating run lengths of 0 and 1 pixels, background first, over the pixels in column-major order
  (down the first column, then the second ...), coded as pycocotools' LEB128-like string.

:func:`encode_rle` / :func:`decode_rle` convert between arrays and RLE; pycocotools scans, codes and
decodes the pixels (no hand-written coder), :func:`rle_counts` only reads a string's run lengths, to check
an RLE before decoding it and to widen a region's runs to its image. :func:`region_mask` reads a region in
either form and is what the consumers of build masks (report, ICL tasks) call; the exports carry the
regions unchanged. Arrays are ``(H, W)``, row 0 at the top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medground.io.errors import ReadError
from medground.io.images import placed_size, read_mask

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
    height, width = placed_size(crop.shape, top, left, height, width)
    # Column-major runs, counted by numpy on the strip of the crop's columns (plus one zero column after
    # it, when the image has one); the columns left and right of the strip are zeros, so the first and
    # last runs (both zeros) grow by them. pycocotools then codes the image-sized runs into its string
    # (frPyObjects): the same bytes as encoding the whole image, a fraction of the time.
    stop = min(width, left + cols + 1)
    strip = np.zeros((height, stop - left), dtype=bool, order="F")
    strip[top : top + rows, :cols] = crop != 0
    flat = strip.ravel(order="F")
    bounds = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], bounds, [flat.size])))
    if flat.size and flat[0]:
        runs = np.concatenate(([0], runs))  # COCO's runs start with zeros
    runs[0] += left * height
    if stop < width:
        runs[-1] += (width - stop) * height
    if height * width == 0:
        runs = np.zeros(1, dtype=np.int64)
    counts = coco_mask.frPyObjects({"size": [height, width], "counts": runs.tolist()}, height, width)[
        "counts"
    ]
    return {"size": [int(height), int(width)], "counts": counts.decode("ascii")}


def rle_counts(text: str) -> np.ndarray:
    """Run lengths (int64) of a compressed RLE string: read to check an RLE before pycocotools decodes it
    (its C decoder trusts the counts and writes past its buffer when they cover more than H x W pixels).

    The string codes each run in 5-bit groups, low group first, as characters ``'0' + group`` (bit 5:
    more groups follow; bit 4 of the last group: negative); from the fourth run on, the value is the
    difference to the run two before it (pycocotools' ``rleFrString``). Strings of more than
    ``_SHORT_RLE`` characters (large structures: thousands) are read with numpy, shorter ones (most
    regions) in a plain loop, which is faster below that length. ValueError on a malformed string.
    """
    values = _short_rle_values(text) if len(text) <= _SHORT_RLE else _long_rle_values(text)
    values[3::2] = np.cumsum(values[1::2])[1:]  # run i >= 3 is stored as run i - run i-2
    values[4::2] = np.cumsum(values[2::2])[1:]
    return values


_SHORT_RLE = 200
_GROUPS = 12  # at most 60 bits per number


def _bad_character(text: str, position: int) -> ValueError:
    return ValueError(f"compressed RLE counts hold {text[position]!r}, outside '0'..'o'")


def _short_rle_values(text: str) -> np.ndarray:
    """The stored numbers of a compressed RLE string (differences from the fourth on), one by one."""
    values: list[int] = []
    value = shift = 0
    for position, character in enumerate(text):
        code = ord(character) - 48
        if not 0 <= code < 64:
            raise _bad_character(text, position)
        value |= (code & 0x1F) << shift
        shift += 5
        if shift > 5 * _GROUPS:
            raise ValueError("compressed RLE counts hold a number of more than 60 bits")
        if not code & 0x20:
            values.append(value - (1 << shift) if code & 0x10 else value)  # bit 4 of the last group: sign
            value = shift = 0
    if shift:
        raise ValueError("compressed RLE counts end in the middle of a number")
    return np.array(values, dtype=np.int64)


def _long_rle_values(text: str) -> np.ndarray:
    """:func:`_short_rle_values`, vectorised: every character's group shifted into place, summed per number."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.int64) - 48
    bad = (codes < 0) | (codes >= 64)
    if bad.any():
        raise _bad_character(text, int(np.argmax(bad)))
    more = (codes & 0x20) != 0
    if more[-1]:
        raise ValueError("compressed RLE counts end in the middle of a number")
    ends = np.flatnonzero(~more)  # the last character of each number
    starts = np.concatenate([[0], ends[:-1] + 1])
    place = np.arange(len(codes)) - np.repeat(starts, ends - starts + 1)  # group index within its number
    if place.max() >= _GROUPS:
        raise ValueError("compressed RLE counts hold a number of more than 60 bits")
    values = np.add.reduceat((codes & 0x1F) << (5 * place), starts)
    values -= ((codes[ends] & 0x10) != 0).astype(np.int64) << (5 * (place[ends] + 1))  # sign extension
    return values


def _check_counts(counts: np.ndarray | list[int], height: int, width: int) -> None:
    negative = bool((counts < 0).any()) if isinstance(counts, np.ndarray) else any(c < 0 for c in counts)
    if negative:
        raise ValueError("RLE counts hold a negative run length")
    total = int(counts.sum()) if isinstance(counts, np.ndarray) else sum(counts)
    if total != height * width:
        raise ValueError(f"RLE counts cover {total} pixels, the {width}x{height} mask has {height * width}")


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
    return coco_mask.decode(coded).view(bool)  # 0/1 uint8 -> bool without a copy (column-major layout)


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
