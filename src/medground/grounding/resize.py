"""Resize rules as pure functions of height and width (the Qwen2-VL family's ``smart_resize``)."""

from __future__ import annotations

import math

__all__ = ["smart_resize"]


def smart_resize(
    height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56, max_pixels: int = 14 * 14 * 4 * 1280
) -> tuple[int, int]:
    """(height, width) the Qwen2-VL/2.5-VL/3-VL processors resize an image to.

    Both sides become multiples of ``factor`` (patch size x spatial merge: 28 for Qwen2/2.5-VL, 32 for
    Qwen3-VL), the pixel count lands in [min_pixels, max_pixels] and the aspect ratio is kept as closely
    as those allow. Same arithmetic as ``transformers``' ``smart_resize``.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got height={height}, width={width}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio must be below 200, got {max(height, width) / min(height, width):.1f}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar
