"""In-context segmentation: segment a query from a few (image, mask) examples and/or a text prompt.

Start with :class:`InContextSegmenter` (``from_pretrained().segment(query, support=[(img, mask)], text=None)``).
The default network is :class:`RidgeSeg` (``solver.py``: a learned closed-form solver over per-pixel
features); :class:`PoolSeg` (``model.py``) is our earlier network, :class:`UniverSeg` (``universeg.py``)
the baseline.
"""

from medground.icl.model import PoolSeg, PoolSegConfig, SupportContext
from medground.icl.segmenter import InContextSegmenter, load_pretrained, save_pretrained
from medground.icl.solver import RidgeContext, RidgeSeg, RidgeSegConfig
from medground.icl.universeg import UniverSeg, UniverSegConfig

__all__ = [
    "InContextSegmenter",
    "PoolSeg",
    "PoolSegConfig",
    "RidgeContext",
    "RidgeSeg",
    "RidgeSegConfig",
    "SupportContext",
    "UniverSeg",
    "UniverSegConfig",
    "load_pretrained",
    "save_pretrained",
]
