"""ImageEncoder: the one place models get LiteMedSAM image embeddings from, and box -> mask on them.

SAM-style use: ``enc = ImageEncoder.from_pretrained(); emb = enc.embed(image)`` (computed once per image
content, then served from an LRU cache bounded in bytes), then any number of prompts on ``emb``:
``enc.predict_boxes(emb, boxes)`` with boxes in the image's own pixels ``[x0, y0, x1, y1)``, masks back
at the image's (H, W). :meth:`ImageEncoder.predict_tokens` takes any sparse prompt tokens (B, N, 256) in
the decoder's space, for prompts other than boxes. Volumes: encode slices as they are asked for
(``embed(slice)``); nothing is encoded ahead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medground.vision.cache import DEFAULT_CACHE_BYTES, EmbeddingCache, image_key
from medground.vision.fast import served_encoder
from medground.vision.frames import Frame, check_box, prepare_image
from medground.vision.model import LiteMedSAM, load_litemedsam

__all__ = ["ImageEmbedding", "ImageEncoder", "default_encoder"]

Encoder = Callable[[torch.Tensor], torch.Tensor]
"""(B, 3, 256, 256) float32 in [0, 1] -> (B, 256, 64, 64) float32."""


@dataclass(frozen=True)
class ImageEmbedding:
    """One image's embedding (1, 256, 64, 64) float32 and the :class:`Frame` mapping its pixels to the model's."""

    key: str
    embedding: torch.Tensor
    frame: Frame


class ImageEncoder:
    """LiteMedSAM's encoder behind a content-keyed embedding cache, plus its box-prompted mask decoder.

    ``model``: a :class:`LiteMedSAM` (its encoder is used unless ``encoder`` is given, e.g. a faster
    runtime of the same network); ``cache_bytes``: the cache's bound (0: no cache).
    """

    def __init__(
        self, model: LiteMedSAM, encoder: Encoder | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES
    ) -> None:
        self.model = model.eval()
        self.encoder = encoder or model.encode
        self.cache = EmbeddingCache(cache_bytes)
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls, cache_bytes: int = DEFAULT_CACHE_BYTES, weights_cache: Path | None = None
    ) -> ImageEncoder:
        """The pretrained LiteMedSAM with the fastest CPU encoder (:func:`medground.vision.fast.served_encoder`);
        see :func:`~medground.vision.model.load_litemedsam` for its errors."""
        model = load_litemedsam(weights_cache)
        encoder = served_encoder(model.image_encoder, model.image_size, weights_cache)
        return cls(model, encoder=encoder, cache_bytes=cache_bytes)

    @torch.inference_mode()
    def embed(self, image: np.ndarray, name: str = "image") -> ImageEmbedding:
        """(H, W[, C]) image (any numeric dtype) -> its :class:`ImageEmbedding`, from the cache when seen before."""
        key = image_key(np.asarray(image))
        x, frame = prepare_image(image, self.model.image_size, name)
        cached = self.cache.get(key)
        if cached is None:
            with self._lock:  # one encoder call at a time: concurrent callers would only share the cores
                cached = self.cache.get(key)
                if cached is None:
                    cached = self.encoder(x[None]).float()
                    self.cache.put(key, cached)
        return ImageEmbedding(key, cached, frame)

    @torch.inference_mode()
    def predict_tokens(self, emb: ImageEmbedding, sparse: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Sparse prompt tokens (B, N, 256) -> (probabilities (B, H, W) float32 at the image's size, IoU scores (B,))."""
        dense = self.model.prompt_encoder.no_mask(sparse.shape[0])
        pe = self.model.prompt_encoder.dense_pe()
        logits, scores = self.model.mask_decoder(emb.embedding, pe, sparse, dense)
        probs = torch.sigmoid(emb.frame.to_input(logits))
        return probs.numpy().astype(np.float32), scores.numpy()

    @torch.inference_mode()
    def predict_boxes(
        self, emb: ImageEmbedding, boxes: Sequence[Sequence[float]] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, 4) boxes ``[x0, y0, x1, y1)`` in the image's pixels -> ((N, H, W) probabilities, (N,) IoU scores).

        Raises ValueError naming a box that is not 4 numbers, empty, or outside the image.
        """
        f = emb.frame
        checked = [check_box(b, f.height, f.width, f"box {i}") for i, b in enumerate(boxes)]
        if not checked:
            raise ValueError("boxes: expected at least one [x0, y0, x1, y1] box, got none")
        model_boxes = torch.from_numpy(f.box_to_model(np.array(checked, dtype=np.float64)))
        return self.predict_tokens(emb, self.model.prompt_encoder.embed_boxes(model_boxes))

    def segment_box(self, image: np.ndarray, box: Sequence[float]) -> np.ndarray:
        """One image, one box ``[x0, y0, x1, y1)`` -> (H, W) float32 probabilities (the embedding is cached)."""
        return self.predict_boxes(self.embed(image), [box])[0][0]


_DEFAULT: ImageEncoder | None = None
_DEFAULT_LOCK = threading.Lock()


def default_encoder() -> ImageEncoder:
    """The process-wide pretrained :class:`ImageEncoder` (loaded on first use): ``segment``, ``ask`` and the
    server share it, so an image is encoded once per process whichever of them asks first."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = ImageEncoder.from_pretrained()
        return _DEFAULT
