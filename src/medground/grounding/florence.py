"""Florence-2's box text: ``liver<loc_x0><loc_y0><loc_x1><loc_y1>``, labels without delimiters.

What Florence-2's own processor does (``Florence2PostProcessor`` in huggingface/transformers,
src/transformers/models/florence2/processing_florence2.py, as installed at transformers 5.25.0):

- ``quantize``: each of the box's four *edges* (x1/y1 the exclusive edge of a pixel box) falls in bin
  ``floor(edge * 1000 / size)``, clipped to [0, 999] (its tokenizer has ``<loc_0>`` .. ``<loc_999>``);
- ``dequantize``: a bin is read back at its centre, ``(n + 0.5) * size / 1000``;
- ``parse_description_with_bboxes_from_text_and_spans``: a phrase is the ``[^<]+`` before a run of
  location tokens, each four of which are one box; several boxes of one phrase follow each other with
  nothing between them, and phrases follow each other with nothing between them either
  (``car<loc_52><loc_333><loc_932><loc_774>door handle<loc_..>...``).

Here a bin is read back as the pixel edge nearest to its centre (ties to the lower edge),
``ceil((n + 0.5) * size / 1000 - 0.5)``: exact for sides below 1000 px, where a bin holds one pixel edge
at most; for larger images within half a bin. Florence-2 truncates the centre instead (``.int()``), which
can lose a pixel on small images. Only the full-size edge of a side of 1000 px or more is lost to the
clip at 999 (a 1000-px-wide box ends at 999), as in Florence-2's own quantiser.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import ClassVar

from medground.grounding.undelimited import UndelimitedDialect
from medground.types import Box

__all__ = ["FlorenceDialect"]

BINS = 1000
_BOX = re.compile(r"<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>")
_RUN = re.compile(r"(?:(?:<loc_\d+>){4})+")


def _bin(edge: int, size: int) -> int:
    """Pixel edge (0..size) -> Florence-2's bin, floor(edge * 1000 / size) in [0, 999]."""
    return min(BINS - 1, max(0, math.floor(edge * BINS / size)))


def _edge(value: int, size: int) -> int:
    """Bin -> the pixel edge nearest its centre (ties down), in [0, size]: in integers,
    ceil(((2 n + 1) size - 1000) / 2000)."""
    return min(size, max(0, -(-((2 * value + 1) * size - BINS) // (2 * BINS))))


@dataclass(frozen=True)
class FlorenceDialect(UndelimitedDialect):
    """Florence-2's ``<loc_>`` boxes: label as plain text, then four location tokens per box, no separators."""

    name: str
    group_separator: ClassVar[str] = ""
    box_separator: ClassVar[str] = ""
    box_pattern: ClassVar[re.Pattern[str]] = _BOX
    run_pattern: ClassVar[re.Pattern[str]] = _RUN

    def box(self, box: Box, width: int, height: int) -> str:
        values = (_bin(box.x0, width), _bin(box.y0, height), _bin(box.x1, width), _bin(box.y1, height))
        return "".join(f"<loc_{v}>" for v in values)

    def decode(self, values: tuple[float, ...], width: int, height: int) -> Box:
        a, b, c, d = (int(v) for v in values)
        x0, x1 = sorted((_edge(a, width), _edge(c, width)))
        y0, y1 = sorted((_edge(b, height), _edge(d, height)))
        x0, y0 = min(x0, width - 1), min(y0, height - 1)
        return Box(x0, y0, max(x0 + 1, x1), max(y0 + 1, y1))
