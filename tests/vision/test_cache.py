"""The embedding cache: content keys, LRU order, a bound in bytes; the encoder facade uses it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medground.vision.cache import EmbeddingCache, image_key


def test_key_is_the_content_not_the_object() -> None:
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert image_key(a) == image_key(a.copy()) == image_key(np.asfortranarray(a))
    assert image_key(a) != image_key(a.astype(np.uint16))  # same values, other dtype
    assert image_key(a) != image_key(a.reshape(4, 3))
    b = a.copy()
    b[0, 0] = 1
    assert image_key(a) != image_key(b)


def test_least_recently_used_leaves_first_within_the_byte_bound() -> None:
    cache = EmbeddingCache(max_bytes=3 * 400)  # three 100-float32 tensors
    for name in "abc":
        cache.put(name, torch.zeros(100))
    assert cache.get("a") is not None  # a is now the most recent; b the least
    cache.put("d", torch.zeros(100))
    assert "b" not in cache and {"a", "c", "d"} <= {k for k in "abcd" if k in cache}
    assert cache.nbytes == 1200 and len(cache) == 3
    cache.put("big", torch.zeros(1000))  # larger than the bound: not kept, nothing dropped
    assert "big" not in cache and len(cache) == 3
    assert (cache.hits, cache.misses) == (1, 0)


def test_zero_bound_keeps_nothing_and_negative_is_refused() -> None:
    cache = EmbeddingCache(0)
    cache.put("a", torch.zeros(1))
    assert cache.get("a") is None and cache.misses == 1
    with pytest.raises(ValueError, match="max_bytes"):
        EmbeddingCache(-1)


def test_encoder_runs_once_per_image_content(litemedsam) -> None:
    from medground.vision.predictor import ImageEncoder

    calls = []

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape)
        return torch.zeros(x.shape[0], 256, 64, 64)

    enc = ImageEncoder(litemedsam, encoder=counting)
    image = np.random.default_rng(0).integers(0, 255, (30, 40), dtype=np.uint8)
    first = enc.embed(image)
    again = enc.embed(image.copy())
    enc.embed(image[::-1])
    assert len(calls) == 2 and first.embedding is again.embedding
    probs, scores = enc.predict_boxes(first, [[0, 0, 40, 30], [5, 5, 20, 25]])
    assert probs.shape == (2, 30, 40) and scores.shape == (2,) and len(calls) == 2
