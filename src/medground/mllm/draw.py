"""Draw grounded boxes onto an image (original-image pixels) and save it as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from medground.grounding import Grounded
from medground.mllm.data import load_image
from medground.types import Box

__all__ = ["draw_boxes"]

_COLOURS = ((255, 64, 64), (64, 200, 64), (64, 128, 255), (255, 200, 0), (200, 64, 255))


def draw_boxes(image: str | Path | np.ndarray | Image.Image, boxes: list[Grounded], out: str | Path,
               given: list[int] | None = None) -> Path:
    """Save ``image`` with each box outlined and labelled (and the user's ``given`` box in white) to ``out``.

    Boxes are ``[x0, y0, x1, y1)`` in pixels of ``image``; the outline covers the last row/column inside.
    """
    picture = load_image(image).copy()
    pen = ImageDraw.Draw(picture)
    width = max(1, round(max(picture.size) / 300))
    if given is not None:
        b = Box.from_list(given)
        pen.rectangle((b.x0, b.y0, b.x1 - 1, b.y1 - 1), outline=(255, 255, 255), width=width)
    for i, g in enumerate(boxes):
        colour = _COLOURS[i % len(_COLOURS)]
        pen.rectangle((g.box.x0, g.box.y0, g.box.x1 - 1, g.box.y1 - 1), outline=colour, width=width)
        if g.label:
            pen.text((g.box.x0 + 2, max(0, g.box.y0 - 12)), g.label, fill=colour)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path
