"""Files of ``medground ask``: the answer drawn on its image (``--draw``) and its masks (``--masks-out``).

Boxes are ``[x0, y0, x1, y1)`` and masks (H, W) in pixels of the asked image (original pixels).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from medground.grounding import Grounded
from medground.io import write_png
from medground.mllm.data import load_image
from medground.mllm.grounder import SegmentedBox
from medground.types import Box
from medground.viz import PALETTE, draw_boxes, fill_masks

__all__ = ["mask_file_names", "save_answer_drawing", "save_answer_masks"]

_GIVEN = (255, 255, 255)


def save_answer_drawing(
    image: str | Path | np.ndarray | Image.Image,
    boxes: list[Grounded],
    out: str | Path,
    given: list[int] | None = None,
) -> Path:
    """Save ``image`` with each answer box outlined and labelled, and the user's ``given`` box in white.

    Boxes that carry a mask (``SegmentedBox``) have it blended in under their outline, in the box's
    colour. Boxes are ``[x0, y0, x1, y1)`` in pixels of ``image``; PNG written to ``out``.
    """
    picture = np.asarray(load_image(image))
    thickness = max(1, round(max(picture.shape[:2]) / 300))
    answer_colors = [PALETTE[i % len(PALETTE)] for i in range(len(boxes))]
    masked = [(g.mask, c) for g, c in zip(boxes, answer_colors, strict=True) if isinstance(g, SegmentedBox)]
    if masked:
        picture = fill_masks(picture, [m for m, _ in masked], colors=[c for _, c in masked])
    drawn = [Box.from_list(given)] if given is not None else []
    labels = ["your box"] if given is not None else []
    colors = [_GIVEN] if given is not None else []
    drawn += [g.box for g in boxes]
    labels += [g.label or "" for g in boxes]
    colors += answer_colors
    write_png(Path(out), draw_boxes(picture, drawn, labels, colors=colors, thickness=thickness))
    return Path(out)


def mask_file_names(labels: list[str | None]) -> list[str]:
    """One PNG name per box, from its label: "left lung" -> ``left_lung.png``; no label -> ``box.png``;
    a repeated name gets ``_2``, ``_3``, ... in order (``left_lung.png``, ``left_lung_2.png``)."""
    names, seen = [], set()
    for label in labels:
        stem = re.sub(r"[^a-z0-9]+", "_", (label or "").lower()).strip("_") or "box"
        name, n = f"{stem}.png", 1
        while name in seen:
            n += 1
            name = f"{stem}_{n}.png"
        seen.add(name)
        names.append(name)
    return names


def save_answer_masks(boxes: list[Grounded], folder: str | Path) -> list[Path]:
    """Write each masked box's mask to ``folder`` as a 0/255 PNG (the image's size), named by
    :func:`mask_file_names` from the labels; returns the paths in the order of ``boxes``.

    Raises ValueError when a box has no mask (the answer was not asked with ``segment=True``).
    """
    masked = [g for g in boxes if isinstance(g, SegmentedBox)]
    if len(masked) != len(boxes):
        raise ValueError("these boxes carry no masks: ask with segment=True (--segment) to get masks")
    paths = [Path(folder) / name for name in mask_file_names([g.label for g in masked])]
    for g, path in zip(masked, paths, strict=True):
        write_png(path, g.mask)  # bool -> 0/255 gray
    return paths
