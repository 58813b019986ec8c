"""Box dialects: the one place where canonical boxes meet the text that models read and write.

Canonical boxes are absolute pixels of the saved image, x1/y1 exclusive (:class:`medground.types.Box`).
A :class:`Dialect` serialises labelled boxes into model text, parses text back into canonical boxes for
an image of a given width and height, and owns the regexes that find its box spans in text;
:func:`reground_text` converts a text's boxes between dialects and image frames. The dialects are
listed in :data:`DIALECTS` (:mod:`medground.grounding.registry`); callers work with one dialect at a
time, the one their text is written in.
"""

from medground.grounding.convert import reground_text, scale_box
from medground.grounding.dialects import (
    Dialect,
    Grounded,
    InternVLDialect,
    JsonDialect,
    TagDialect,
)
from medground.grounding.florence import FlorenceDialect
from medground.grounding.llava import LlavaSquareDialect
from medground.grounding.registry import DEPRECATED_NAMES, DIALECTS, get_dialect
from medground.grounding.resize import smart_resize
from medground.grounding.scales import BINS, EDGES, Scale
from medground.grounding.undelimited import UndelimitedDialect

__all__ = [
    "BINS",
    "DEPRECATED_NAMES",
    "DIALECTS",
    "EDGES",
    "Dialect",
    "FlorenceDialect",
    "Grounded",
    "InternVLDialect",
    "JsonDialect",
    "LlavaSquareDialect",
    "Scale",
    "TagDialect",
    "UndelimitedDialect",
    "get_dialect",
    "reground_text",
    "scale_box",
    "smart_resize",
]
