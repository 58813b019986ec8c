"""In-context segmentation: segment a query from a few (image, mask) examples and/or a text prompt.

Start with :class:`InContextSegmenter` (``from_pretrained().segment(query, support=[(img, mask)], text=None)``).
The network is :class:`PoolSeg` (``model.py``); :class:`UniverSeg` (``universeg.py``) is the baseline.
"""

from medground.icl.model import PoolSeg, PoolSegConfig, SupportContext
from medground.icl.segmenter import InContextSegmenter, load_pretrained, save_pretrained
from medground.icl.universeg import UniverSeg, UniverSegConfig

__all__ = [
    "InContextSegmenter",
    "PoolSeg",
    "PoolSegConfig",
    "SupportContext",
    "UniverSeg",
    "UniverSegConfig",
    "load_pretrained",
    "save_pretrained",
]
