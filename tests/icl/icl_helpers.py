"""Helpers shared by the in-context segmentation tests (imported by conftest and tests)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from medground.icl.solver import RidgeSeg, RidgeSegConfig


class FakeTextEncoder:
    """Deterministic unit vectors from a hash of the text (no model download, no weights)."""

    def encode(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            rows.append(
                torch.nn.functional.normalize(
                    torch.randn(384, generator=torch.Generator().manual_seed(seed)), dim=0
                )
            )
        return torch.stack(rows) if rows else torch.zeros(0, 384)


def disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    """(h, w) bool disc."""
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def tiny_ridgeseg() -> RidgeSeg:
    """A RidgeSeg at 32 px with tiny learned parts, seeded, in eval mode."""
    torch.manual_seed(0)
    config = RidgeSegConfig(
        size=32, learned_channels=4, random_features=16, refine_widths=(4, 8), global_dim=8
    )
    return RidgeSeg(config).eval()
