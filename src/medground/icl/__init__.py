"""In-context segmentation: segment a query from a few (image, mask) examples and/or a text prompt.

Start with :class:`InContextSegmenter` (``from_pretrained().segment(query, support=[(img, mask)], text=None)``).
The default network is :class:`RidgeSeg` (``solver.py``: a learned closed-form solver over per-pixel
features); :class:`PoolSeg` (``model.py``) is our earlier network, :class:`UniverSeg` (``universeg.py``)
the baseline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medground.lazy import lazy_attributes

if TYPE_CHECKING:
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

_WHERE = {
    "PoolSeg": "medground.icl.model",
    "PoolSegConfig": "medground.icl.model",
    "SupportContext": "medground.icl.model",
    "InContextSegmenter": "medground.icl.segmenter",
    "load_pretrained": "medground.icl.segmenter",
    "save_pretrained": "medground.icl.segmenter",
    "RidgeContext": "medground.icl.solver",
    "RidgeSeg": "medground.icl.solver",
    "RidgeSegConfig": "medground.icl.solver",
    "UniverSeg": "medground.icl.universeg",
    "UniverSegConfig": "medground.icl.universeg",
}


__getattr__ = lazy_attributes(__name__, _WHERE)
