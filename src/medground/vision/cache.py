"""Embeddings computed once per image: an LRU cache keyed by the image's content, bounded in bytes."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np
import torch

__all__ = ["DEFAULT_CACHE_BYTES", "EmbeddingCache", "image_key"]

DEFAULT_CACHE_BYTES = 256 * 2**20
"""Default bound: 256 MiB, 64 LiteMedSAM embeddings (256 x 64 x 64 float32, 4 MiB each)."""


def image_key(image: np.ndarray) -> str:
    """SHA-256 of an image's shape, dtype and pixel bytes (so equal pixels give equal keys, whatever their source)."""
    arr = np.ascontiguousarray(image)
    digest = hashlib.sha256(f"{arr.shape}|{arr.dtype.str}|".encode())
    digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


class EmbeddingCache:
    """Thread-safe LRU map key -> tensor; least recently used entries leave once ``max_bytes`` is passed.

    ``max_bytes = 0`` keeps nothing. A tensor larger than the bound is returned to its caller but not kept.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes: expected >= 0 bytes, got {max_bytes}")
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> torch.Tensor | None:
        """The tensor under ``key`` (now the most recently used), or None."""
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: str, value: torch.Tensor) -> None:
        """Keep ``value`` under ``key``, then drop the least recently used entries until within the bound."""
        size = value.element_size() * value.nelement()
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.element_size() * old.nelement()
            if size > self.max_bytes:
                return
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.element_size() * dropped.nelement()
