"""Box dialects: the one place where canonical boxes meet the text that models read and write.

Canonical boxes are absolute pixels of the saved image, x1/y1 exclusive (:class:`medground.types.Box`).
A :class:`Dialect` serialises labelled boxes into model text, parses text back into canonical boxes for
an image of a given width and height, and owns the regexes that find its box spans in text;
:func:`reground_text` converts a text's boxes between dialects and image frames.
"""

from medground.grounding.convert import reground_text, scale_box
from medground.grounding.dialects import (
    DIALECTS,
    Dialect,
    Grounded,
    InternVLDialect,
    JsonDialect,
    TagDialect,
    get_dialect,
)
from medground.grounding.resize import smart_resize

__all__ = [
    "DIALECTS",
    "Dialect",
    "Grounded",
    "InternVLDialect",
    "JsonDialect",
    "TagDialect",
    "get_dialect",
    "reground_text",
    "scale_box",
    "smart_resize",
]
