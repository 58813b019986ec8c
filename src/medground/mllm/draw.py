"""Save an answer's grounded boxes drawn on its image (original-image pixels), for ``medground ask --draw``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medground.grounding import Grounded
from medground.io import write_png
from medground.mllm.data import load_image
from medground.types import Box
from medground.viz import PALETTE, draw_boxes

__all__ = ["save_answer_drawing"]

_GIVEN = (255, 255, 255)


def save_answer_drawing(
    image: str | Path | np.ndarray | Image.Image,
    boxes: list[Grounded],
    out: str | Path,
    given: list[int] | None = None,
) -> Path:
    """Save ``image`` with each answer box outlined and labelled, and the user's ``given`` box in white.

    Boxes are ``[x0, y0, x1, y1)`` in pixels of ``image``; PNG written to ``out``.
    """
    picture = np.asarray(load_image(image))
    thickness = max(1, round(max(picture.shape[:2]) / 300))
    drawn = [Box.from_list(given)] if given is not None else []
    labels = ["your box"] if given is not None else []
    colors = [_GIVEN] if given is not None else []
    drawn += [g.box for g in boxes]
    labels += [g.label or "" for g in boxes]
    colors += [PALETTE[i % len(PALETTE)] for i in range(len(boxes))]
    write_png(Path(out), draw_boxes(picture, drawn, labels, colors=colors, thickness=thickness))
    return Path(out)
