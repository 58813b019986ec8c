"""Re-render the boxes of a text from one dialect into another, snapping them to known canonical boxes.

Used by training (target family's dialect, crops and pads) and by export (any dialect, resized images):
both find box spans with the source dialect's ``span_pattern``, so LLM-rewritten text converts as well as
generated text, provided its box strings survived verbatim (the rewriter's verifier ensures it).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from medground.grounding.dialects import Dialect, Grounded
from medground.types import Box

__all__ = ["reground_text", "scale_box"]


def scale_box(box: Box, sx: float, sy: float, width: int, height: int) -> Box:
    """``box`` in an image resized by (sx, sy) to width x height: edges scaled and rounded, >= 1 px a side.

    Rounding the edges is what nearest-neighbour resampling of the region's mask gives, within 1 px.
    """
    x0 = min(width - 1, round(box.x0 * sx))
    y0 = min(height - 1, round(box.y0 * sy))
    return Box(
        x0, y0, max(x0 + 1, min(width, round(box.x1 * sx))), max(y0 + 1, min(height, round(box.y1 * sy)))
    )


def reground_text(
    text: str,
    source: Dialect,
    target: Dialect,
    width: int,
    height: int,
    exact: list[Box] | None = None,
    move: Callable[[Box], Box] | None = None,
    size: tuple[int, int] | None = None,
) -> str:
    """``text`` with every grounded span of ``source`` (for a width x height image) rewritten in ``target``.

    ``exact``: canonical boxes the text may denote (earlier ones win ties); a parsed box equal to one of
    them after the source dialect's round trip is replaced by it, so grid rounding does not accumulate.
    ``move``: maps a canonical box into the output image's frame (crop, pad, resize); ``size``: that
    image's (width, height), default the input's. Text that is not a box is left as it is.
    """
    if move is None and size is None and source == target:
        return text
    snap: dict[Box, Box] = {}
    for box in exact or []:
        snap.setdefault(source.quantise(box, width, height), box)
    out_w, out_h = size or (width, height)

    def replace(match: re.Match[str]) -> str:
        found = [
            Grounded(g.label, snap.get(g.box, g.box)) for g in source.parse(match.group(0), width, height)
        ]
        if move is not None:
            found = [Grounded(g.label, move(g.box)) for g in found]
        return target.render(found, out_w, out_h) if found else match.group(0)

    return source.span_pattern.sub(replace, text)
