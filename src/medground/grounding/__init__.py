"""Box dialects: the one place where canonical boxes meet the text that models read and write.

Every function here is pure. Canonical boxes are absolute pixels of the saved image, x1/y1 exclusive
(:class:`medground.types.Box`). A dialect serialises a labelled box into model text and parses model
text back into canonical boxes for an image of the given width and height.
"""

from medground.grounding.dialects import (
    DIALECTS,
    Dialect,
    Grounded,
    JsonDialect,
    TagDialect,
    get_dialect,
)
from medground.grounding.resize import smart_resize

__all__ = ["DIALECTS", "Dialect", "Grounded", "JsonDialect", "TagDialect", "get_dialect", "smart_resize"]
