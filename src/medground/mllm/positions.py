"""The frame a training sample is shown in (a crop window, then a black border) and what moves with it.

Boxes move into the framed image (:func:`frame_mover`, :func:`framed_size`); position phrases ("in the upper
left part of the image", :func:`medground.data.regions.position_phrase`) are recomputed there, since the
thirds of the framed image are not those of the original (:func:`position_rewrites`). Boxes are absolute
pixels with exclusive x1/y1; ``pad`` is (left, top, right, bottom) pixels.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from medground.data.regions import position_phrase
from medground.types import Box

__all__ = ["frame_mover", "framed_size", "position_rewrites", "rewrite_phrases"]


def _in_crop(box: Box, crop: Box) -> Box:
    """``box`` in the frame of the ``crop`` window (clipped to it; a box outside becomes a 1-pixel box at the edge)."""
    x0 = min(max(box.x0 - crop.x0, 0), crop.width - 1)
    y0 = min(max(box.y0 - crop.y0, 0), crop.height - 1)
    return Box(
        x0,
        y0,
        max(x0 + 1, min(box.x1 - crop.x0, crop.width)),
        max(y0 + 1, min(box.y1 - crop.y0, crop.height)),
    )


def frame_mover(crop: Box | None, pad: tuple[int, int, int, int] | None) -> Callable[[Box], Box]:
    """Box in the original image -> box in the frame the model sees (crop window, then black border)."""
    left, top = (pad or (0, 0, 0, 0))[:2]

    def move(box: Box) -> Box:
        if crop is not None:
            box = _in_crop(box, crop)
        return Box(box.x0 + left, box.y0 + top, box.x1 + left, box.y1 + top)

    return move


def framed_size(
    width: int, height: int, crop: Box | None, pad: tuple[int, int, int, int] | None
) -> tuple[int, int]:
    """(width, height) of the image the model sees after ``crop`` then ``pad``."""
    out_w, out_h = (crop.width, crop.height) if crop is not None else (width, height)
    left, top, right, bottom = pad or (0, 0, 0, 0)
    return out_w + left + right, out_h + top + bottom


def _radiological(regions: list[dict[str, Any]]) -> bool | None:
    """Whether the record's position phrases name the patient's side (radiological display).

    True if any phrase does; False if a phrase off the central column does not; None when every phrase
    is in the central column (the build writes the side only off it, so the display cannot be told).
    """
    phrases = [str(r.get("position") or "") for r in regions]
    if any("the patient's" in p for p in phrases):
        return True
    if any(p and "central" not in p and "centre" not in p for p in phrases):
        return False
    return None


def _reframed_position(
    region: dict[str, Any], radiological: bool | None, move: Callable[[Box], Box], size: tuple[int, int]
) -> str | None:
    """The region's position phrase in the framed image of ``size`` (width, height), or None when it
    depends on a display that the record does not reveal."""
    center = move(Box.from_list(region["box"])).center
    phrases = {
        position_phrase(center, *size, r)
        for r in ((True, False) if radiological is None else (radiological,))
    }
    return phrases.pop() if len(phrases) == 1 else None


def position_rewrites(
    record: dict[str, Any],
    info: dict[str, Any],
    texts: tuple[str, str],
    crop: Box | None,
    pad: tuple[int, int, int, int] | None,
) -> dict[str, str] | None:
    """Old -> new position phrase for one turn's texts after ``crop``/``pad``; None: drop the turn.

    The generators write the position of the turn's first region (REG and single-instance REC); a turn
    without region metadata checks every region of the record. A phrase that maps to two different
    new phrases, or whose new phrase depends on an unknown display, makes the turn unusable.
    """
    indexed = record.get("regions", [])
    regions = [r for r in indexed if r.get("box") and r.get("position")]
    first = [int(i) for i in info.get("regions", [])][:1]
    candidates = [indexed[i] for i in first if i < len(indexed)] if first else regions
    candidates = [r for r in candidates if r.get("box") and r.get("position")]
    radiological = _radiological(regions)
    move, size = frame_mover(crop, pad), framed_size(int(record["width"]), int(record["height"]), crop, pad)
    rewrites: dict[str, str] = {}
    for region in candidates:
        old = str(region["position"])
        if not any(old in text for text in texts):
            continue
        new = _reframed_position(region, radiological, move, size)
        if new is None or rewrites.get(old, new) != new:
            return None
        rewrites[old] = new
    return rewrites


def rewrite_phrases(text: str, rewrites: dict[str, str]) -> str:
    """``text`` with every old phrase of ``rewrites`` replaced by its new one in one pass (longest first)."""
    if not rewrites:
        return text
    pattern = "|".join(re.escape(old) for old in sorted(rewrites, key=len, reverse=True))
    return re.sub(pattern, lambda m: rewrites[m.group(0)], text)
