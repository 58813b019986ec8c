"""LLaVA-1.5's own grounding text: ``[x0, y0, x1, y1]`` in [0, 1] of the image padded to a square.

LLaVA-1.5 trains with ``image_aspect_ratio: pad``: ``expand2square`` (haotian-liu/LLaVA,
llava/mm_utils.py and llava/train/train.py at commit c121f043) pastes a ``w`` x ``h`` image into a
``S`` x ``S`` square, ``S = max(w, h)``, at ``(0, (w - h) // 2)`` when it is wider than tall and at
``((h - w) // 2, 0)`` when taller, and the boxes of its grounding data (RefCOCO and Visual Genome in
``llava_v1_5_mix665k``) are the box edges in that square divided by ``S``, two decimals, no label:
``[0.61, 0.36, 0.92, 0.83]`` (the derivation is worked out in haotian-liu/LLaVA issues #606 and #623:
x / S, y / S, (x + w) / S, (y + h) / S of the padded image, x1/y1 the exclusive edges).

Numbers are written as Python prints a float rounded to two decimals (``0.3``, ``1.0``), as the
released data reads; read back, a number ``v`` is the pixel edge ``round(v * S - offset)``. Two decimals
are steps of S / 100 pixels, so a box comes back within S / 200 + 1/2 px of where it was.

The label, when there is one, is plain text before the boxes (``liver [0.1, 0.2, 0.3, 0.4]``), as in
:class:`~medground.grounding.undelimited.UndelimitedDialect`. Not the ``llava`` *export format*: that is
LLaVA's JSON file layout, which carries any dialect.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from medground.grounding.scales import edges_to_box
from medground.grounding.undelimited import UndelimitedDialect
from medground.types import Box

__all__ = ["LlavaSquareDialect", "square_offsets"]

_UNIT = r"(?:[01](?:\.\d+)?|\.\d+)"
_BOX = re.compile(rf"\[\s*({_UNIT})\s*,\s*({_UNIT})\s*,\s*({_UNIT})\s*,\s*({_UNIT})\s*\]")
_PLAIN = rf"\[\s*{_UNIT}\s*,\s*{_UNIT}\s*,\s*{_UNIT}\s*,\s*{_UNIT}\s*\]"
_RUN = re.compile(rf"{_PLAIN}(?:\s*,\s*{_PLAIN})*")


def square_offsets(width: int, height: int) -> tuple[int, int, int]:
    """(side S, x offset, y offset) of a width x height image in LLaVA's ``expand2square`` square."""
    side = max(width, height)
    if width > height:
        return side, 0, (width - height) // 2
    return side, (height - width) // 2, 0


@dataclass(frozen=True)
class LlavaSquareDialect(UndelimitedDialect):
    """LLaVA-1.5's boxes: ``[x0, y0, x1, y1]`` edges / S in the padded square, two decimals, joined by ", "."""

    name: str
    label_separator: ClassVar[str] = " "
    box_pattern: ClassVar[re.Pattern[str]] = _BOX
    run_pattern: ClassVar[re.Pattern[str]] = _RUN

    def box(self, box: Box, width: int, height: int) -> str:
        side, ox, oy = square_offsets(width, height)
        edges = (box.x0 + ox, box.y0 + oy, box.x1 + ox, box.y1 + oy)
        return "[" + ", ".join(str(round(e / side, 2)) for e in edges) + "]"

    def decode(self, values: tuple[float, ...], width: int, height: int) -> Box:
        side, ox, oy = square_offsets(width, height)
        a, b, c, d = values
        return edges_to_box(a * side - ox, b * side - oy, c * side - ox, d * side - oy, width, height)
