"""The two 1000-step scales of the grid dialects, as the model families' own code defines them.

A scale maps a canonical box (absolute pixels of a ``width`` x ``height`` image, x1/y1 exclusive) to
four integers and back. Each is a pure function of the box and the image size.

``BINS`` (Qwen-VL, so BiRD and Med-GRIT): a pixel column ``x`` falls in bin ``floor(x * 1000 / w)``; a
box runs from the bin of its first pixel to the bin of its *last* pixel (x1 - 1), so a full-width box
ends at 999, as in Qwen-VL's README ("normalized values in the range [0, 1000)") and its RefCOCO
evaluation, which reads a number n as ``n / 999 * w`` (QwenLM/Qwen-VL, eval_mm/evaluate_grounding.py at
commit aa00ed04). A bin is read back as its first pixel, ``ceil(n * w / 1000)``. Box -> text -> box is
exact for sides up to 1000 px and text -> box -> text for sides of at least 1000 px.

``EDGES`` (Qwen2-VL, Qwen3-VL, InternVL): the box's *edges* scaled by 1000 / size and rounded,
``round(x0 * 1000 / w)`` .. ``round(x1 * 1000 / w)`` with x1 the exclusive edge, clipped to [0, 1000]
(a full-width box ends at 1000), read back as ``round(n * w / 1000)``. That is Qwen's own conversion
for Qwen2-VL and Qwen3-VL grounding data (``convert_to_qwen2vl_format`` in QwenLM/Qwen3-VL,
qwen-vl-finetune/tools/process_bbox.ipynb at commit 96588727, applied to COCO's [x, y, x + w, y + h]
boxes), what ms-swift's default ``norm_bbox: norm1000`` writes from real boxes (``round(x / width *
1000)`` in modelscope/ms-swift swift/template/base.py at commit 3602360a), and
InternVL's (its chat-data docs normalise ``round(x / width * 1000)``; its RefCOCO evaluation,
OpenGVLab/InternVL internvl_chat/eval/refcoco/evaluate_grounding.py at commit 2410d1db, divides by 1000
and multiplies by the width). Exact both ways for sides up to 1000 px.

Until 2026-12 medground wrote Qwen2-VL and Qwen3-VL boxes on BINS; those dialects are kept as
``qwen2-vl-grid`` and ``qwen3-vl-grid`` for the data and models made with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from medground.types import Box

__all__ = ["BINS", "EDGES", "STEPS", "Scale", "edges_to_box"]

STEPS = 1000


def edges_to_box(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> Box:
    """Continuous pixel edges (any order) -> canonical box, rounded and clipped, at least 1 px a side."""
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    cx0, cy0 = min(width - 1, max(0, round(x0))), min(height - 1, max(0, round(y0)))
    return Box(cx0, cy0, max(cx0 + 1, min(width, round(x1))), max(cy0 + 1, min(height, round(y1))))


@dataclass(frozen=True)
class Scale:
    """One 1000-step scale: ``edges`` True for EDGES (box edges, [0, 1000]), False for BINS ([0, 1000))."""

    name: str
    edges: bool

    def encode(self, box: Box, width: int, height: int) -> tuple[int, int, int, int]:
        """Canonical box -> (x0, y0, x1, y1) on this scale."""
        if self.edges:
            return (
                _edge(box.x0, width),
                _edge(box.y0, height),
                _edge(box.x1, width),
                _edge(box.y1, height),
            )
        return _bin(box.x0, width), _bin(box.y0, height), _bin(box.x1 - 1, width), _bin(box.y1 - 1, height)

    def decode(self, values: tuple[float, ...], width: int, height: int) -> Box:
        """(x0, y0, x1, y1) on this scale -> canonical box; corners may come swapped, >= 1 px a side."""
        a, b, c, d = values
        if self.edges:
            return edges_to_box(
                a * width / STEPS, b * height / STEPS, c * width / STEPS, d * height / STEPS, width, height
            )
        x0, x1 = sorted((_first_pixel(a, width), _first_pixel(c, width)))
        y0, y1 = sorted((_first_pixel(b, height), _first_pixel(d, height)))
        return Box(x0, y0, x1 + 1, y1 + 1)

    def quantise(self, box: Box, width: int, height: int) -> Box:
        """The box as this scale gives it back, ``decode(encode(box))``."""
        return self.decode(self.encode(box, width, height), width, height)


def _bin(pixel: int, size: int) -> int:
    """Pixel index (0..size-1) -> its bin in [0, 1000)."""
    return min(STEPS - 1, max(0, math.floor(pixel * STEPS / size)))


def _first_pixel(value: float, size: int) -> int:
    """Bin -> the first pixel index of that bin, clipped to the image."""
    return min(size - 1, max(0, math.ceil(value * size / STEPS)))


def _edge(edge: int, size: int) -> int:
    """Pixel edge (0..size) -> round(edge * 1000 / size), in [0, 1000]."""
    return min(STEPS, max(0, round(edge * STEPS / size)))


BINS = Scale("bins", edges=False)
EDGES = Scale("edges", edges=True)
