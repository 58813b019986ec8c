"""Drawing for people: box outlines with labels and translucent masks on images.

Every function takes (H, W) or (H, W, 3|4) uint8 images and returns a new (H, W, 3) uint8 image;
boxes are absolute pixels of that image, ``[x0, y0, x1, y1)`` with x1/y1 exclusive.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from medground.types import Box

__all__ = ["PALETTE", "draw_boxes", "fill_masks"]

PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
)


def _rgb(image: np.ndarray) -> np.ndarray:
    if (
        image.dtype != np.uint8
        or image.ndim not in (2, 3)
        or (image.ndim == 3 and image.shape[2] not in (3, 4))
    ):
        raise ValueError(f"expected a (H, W) or (H, W, 3|4) uint8 image, got {image.shape} {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return image[:, :, :3].copy()


def _color(i: int, colors: Sequence[tuple[int, int, int]] | None) -> tuple[int, int, int]:
    table = colors if colors else PALETTE
    return tuple(int(c) for c in table[i % len(table)])  # type: ignore[return-value]


def _label(
    draw: ImageDraw.ImageDraw, text: str, x0: int, y0: int, top: int, color: tuple[int, int, int]
) -> None:
    """Text on a filled tag in ``color``: above row ``y0`` when it fits, else from row ``top`` down."""
    font = ImageFont.load_default()
    left, t, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left + 2, bottom - t + 2
    y = y0 - th if y0 - th >= 0 else top
    ink = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
    draw.rectangle([x0, y, x0 + tw - 1, y + th - 1], fill=color)
    draw.text((x0 + 1 - left, y + 1 - t), text, fill=ink, font=font)


def draw_boxes(
    image: np.ndarray,
    boxes: Sequence[Box | Sequence[int]],
    labels: Sequence[str] | None = None,
    colors: Sequence[tuple[int, int, int]] | None = None,
    thickness: int = 2,
) -> np.ndarray:
    """Draw labelled box outlines on a copy of ``image``.

    image: (H, W) or (H, W, 3|4) uint8. boxes: absolute pixels of this image, ``[x0, y0, x1, y1)`` with
    x1/y1 exclusive (``Box`` or 4 ints). The outline is ``thickness`` pixels wide and lies inside the box
    (rows y0..y0+t-1 and y1-t..y1-1, columns x0..x0+t-1 and x1-t..x1-1), clipped to the image. Box i uses
    ``colors[i % len(colors)]`` (default PALETTE); its label, if given, is written on a tag of that colour
    just above the box (inside its top edge when there is no room above). Returns (H, W, 3) uint8.
    """
    out = _rgb(image)
    h, w = out.shape[:2]
    placed: list[tuple[str, int, int, int, tuple[int, int, int]]] = []
    for i, raw in enumerate(boxes):
        x0, y0, x1, y1 = raw.as_list() if isinstance(raw, Box) else (int(v) for v in raw)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 <= x0 or y1 <= y0:
            continue
        color = _color(i, colors)
        t = max(1, min(thickness, (x1 - x0 + 1) // 2, (y1 - y0 + 1) // 2))
        out[y0 : y0 + t, x0:x1] = color
        out[y1 - t : y1, x0:x1] = color
        out[y0:y1, x0 : x0 + t] = color
        out[y0:y1, x1 - t : x1] = color
        if labels is not None and i < len(labels) and labels[i]:
            placed.append((labels[i], x0, y0, y0 + t, color))
    if placed:
        pil = Image.fromarray(out)
        draw = ImageDraw.Draw(pil)
        for text, x0, y0, top, color in placed:
            _label(draw, text, x0, y0, top, color)
        out = np.asarray(pil).copy()
    return out


def fill_masks(
    image: np.ndarray,
    masks: Sequence[np.ndarray],
    colors: Sequence[tuple[int, int, int]] | None = None,
    alpha: float = 0.4,
) -> np.ndarray:
    """Blend each (H, W) mask (non-zero = inside) onto a copy of ``image`` in its colour; returns (H, W, 3) uint8."""
    out = _rgb(image).astype(np.float32)
    for i, mask in enumerate(masks):
        if mask.shape != out.shape[:2]:
            raise ValueError(f"mask {i} has shape {mask.shape}, expected the image's {out.shape[:2]}")
        inside = mask.astype(bool)
        out[inside] = (1 - alpha) * out[inside] + alpha * np.asarray(_color(i, colors), np.float32)
    return np.rint(out).astype(np.uint8)
