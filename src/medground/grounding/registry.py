"""The one table of box dialects, by name; a new dialect is one line here.

| dialect            | text                                                               | numbers                          |
|--------------------|--------------------------------------------------------------------|----------------------------------|
| qwen-vl-grid       | ``<ref>liver</ref><box>(x0,y0),(x1,y1)</box>`` (BiRD, Med-GRIT)     | [0, 1000) bins, last pixel       |
| qwen2-vl-norm1000  | ``<|object_ref_start|>liver<|object_ref_end|><|box_start|>(x0,y0),(x1,y1)<|box_end|>`` | [0, 1000] edges |
| qwen2-vl-grid      | the same text                                                      | [0, 1000) bins, last pixel       |
| qwen2.5-vl-pixels  | ``{"bbox_2d": [x0, y0, x1, y1], "label": "liver"}``                 | pixels of the resized input      |
| qwen3-vl-norm1000  | ``{"bbox_2d": [x0, y0, x1, y1], "label": "liver"}``                 | [0, 1000] edges                  |
| qwen3-vl-grid      | the same text                                                      | [0, 1000) bins, last pixel       |
| internvl-norm1000  | ``<ref>liver</ref><box>[[x0, y0, x1, y1], ...]</box>``              | [0, 1000] edges                  |
| florence-2-loc     | ``liver<loc_x0><loc_y0><loc_x1><loc_y1>``                           | [0, 1000) bins of the edges      |
| llava-1.5-square   | ``liver [x0, y0, x1, y1]``                                          | [0, 1] of the padded square      |

A dialect's name says whose text it is *and* what its numbers are, so it is never the name of a model
family (``--family qwen2-vl``) or of an export format (``--format llava``, ``--format internvl``).
The ``-norm1000`` dialects are the Qwen2-VL/Qwen3-VL families' own numbers (see
:mod:`medground.grounding.scales`). Until 2026-12 medground wrote them on the last-pixel bins of
Qwen-VL instead: those are the ``-grid`` variants, kept because data and models (the shipped bird-nano)
were made with them. The names of that time (``qwen-vl``, ``qwen2-vl``, ``qwen2.5-vl``, ``qwen3-vl``,
``internvl``) still read, with a DeprecationWarning, as the dialect they meant then, because records,
prediction rows and model folders carry them; no listing shows them.
"""

from __future__ import annotations

import warnings

from medground.choices import closest, unknown_choice
from medground.grounding.dialects import Dialect, InternVLDialect, JsonDialect, TagDialect
from medground.grounding.florence import FlorenceDialect
from medground.grounding.llava import LlavaSquareDialect
from medground.grounding.scales import BINS, EDGES

__all__ = ["DEPRECATED_NAMES", "DIALECTS", "get_dialect"]

DIALECTS: dict[str, Dialect] = {
    "qwen-vl-grid": TagDialect("qwen-vl-grid", "<ref>", "</ref>", "<box>", "</box>"),
    "qwen2-vl-norm1000": TagDialect(
        "qwen2-vl-norm1000",
        "<|object_ref_start|>",
        "<|object_ref_end|>",
        "<|box_start|>",
        "<|box_end|>",
        EDGES,
    ),
    "qwen2.5-vl-pixels": JsonDialect("qwen2.5-vl-pixels", absolute=True, factor=28, max_pixels=12845056),
    "qwen3-vl-norm1000": JsonDialect("qwen3-vl-norm1000", absolute=False, factor=32),
    "qwen2-vl-grid": TagDialect(
        "qwen2-vl-grid", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", BINS
    ),
    "qwen3-vl-grid": JsonDialect("qwen3-vl-grid", absolute=False, factor=32, scale=BINS),
    "internvl-norm1000": InternVLDialect("internvl-norm1000"),
    "florence-2-loc": FlorenceDialect("florence-2-loc"),
    "llava-1.5-square": LlavaSquareDialect("llava-1.5-square"),
}

DEPRECATED_NAMES: dict[str, str] = {
    "qwen-vl": "qwen-vl-grid",
    "qwen2-vl": "qwen2-vl-grid",
    "qwen2.5-vl": "qwen2.5-vl-pixels",
    "qwen3-vl": "qwen3-vl-grid",
    "internvl": "internvl-norm1000",
}
"""Old dialect name -> the dialect it meant, under its name now (the old names were also model family or
format names)."""


def get_dialect(name: str) -> Dialect:
    """The dialect registered under ``name``; an old name (DEPRECATED_NAMES) warns and gives its dialect.

    An unknown name raises KeyError listing the dialects and the closest name.
    """
    if name in DIALECTS:
        return DIALECTS[name]
    if name in DEPRECATED_NAMES:
        new = DEPRECATED_NAMES[name]
        warnings.warn(
            f"dialect name {name!r} is deprecated (it is also a model family or export format name); "
            f"use {new!r}",
            DeprecationWarning,
            stacklevel=2,
        )
        return DIALECTS[new]
    match = closest(name, [*DIALECTS, *DEPRECATED_NAMES])  # an old name's hint is its dialect's name now
    hint = f" Did you mean {DEPRECATED_NAMES.get(match, match)!r}?" if match else ""
    raise KeyError(unknown_choice("dialect", name, [], listed=DIALECTS) + hint)
