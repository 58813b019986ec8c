"""TextSegHead: a structure name's MiniLM embedding + a frozen LiteMedSAM image embedding -> coarse mask and presence.

Frames: the image embedding is (B, 256, 64, 64) for the padded 256 x 256 model input
(:mod:`medground.vision.frames`); the head's mask logits are (B, 64, 64) on the same grid (one cell =
4 x 4 model pixels), and the presence logit is (B,). The text embedding (B, 384) is a unit vector from
:class:`medground.icl.text.TextEncoder`. The name modulates the image features (FiLM: per-channel scale
and shift), so the same network answers for every name; nothing is specific to one structure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = ["HeadConfig", "TextSegHead"]


@dataclass(frozen=True)
class HeadConfig:
    """Sizes of :class:`TextSegHead`: ``embed`` image channels, ``text`` text width, ``width`` hidden channels."""

    embed: int = 256
    text: int = 384
    width: int = 64
    pool: int = 2  # the 64 x 64 embedding is averaged over pool x pool cells first: a (64 / pool) grid

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _context(x: torch.Tensor) -> torch.Tensor:
    """(B, g, g, C) -> (B, g, g, 3C): each cell's features beside its 4 x 4 and 16 x 16 block means (cheap context)."""
    b, g, _, c = x.shape
    parts = [x]
    for k in (4, 16):
        n = g // k
        means = x.reshape(b, n, k, n, k, c).mean((2, 4))
        parts.append(means[:, :, None, :, None].expand(b, n, k, n, k, c).reshape(b, g, g, c))
    return torch.cat(parts, dim=-1)


def _block(inp: int, out: int) -> nn.Sequential:
    """Per-cell Linear, LayerNorm, GELU on channels-last (B, g, g, inp) -> (B, g, g, out)."""
    return nn.Sequential(nn.Linear(inp, out), nn.LayerNorm(out), nn.GELU())


class TextSegHead(nn.Module):
    """(B, 64, 64, 256) image embedding, (B, 384) text -> ((B, g, g) mask logits, (B,) presence logits); g = 64 / pool.

    Channels-last because every layer is per cell (matrix products are the fast path on a CPU);
    :meth:`forward` also takes the encoder's (B, 256, 64, 64) layout.
    """

    def __init__(self, config: HeadConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or HeadConfig()
        self.reduce = _block(c.embed, c.width)
        self.film = nn.Sequential(nn.Linear(c.text, c.width), nn.GELU(), nn.Linear(c.width, 2 * c.width))
        self.mix = _block(3 * c.width, c.width)
        self.mix2 = _block(3 * c.width, c.width)
        self.out = nn.Linear(c.width, 1)
        self.presence = nn.Sequential(nn.Linear(2 * c.width + 2, c.width), nn.GELU(), nn.Linear(c.width, 1))

    def prepare(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, 256, 64, 64) encoder layout or channels-last, at 64 or the head's grid -> (B, g, g, 256) float32."""
        if embedding.shape[1] == self.config.embed and embedding.shape[-1] != self.config.embed:
            embedding = embedding.permute(0, 2, 3, 1)
        x = embedding.float()
        b, g, _, c = x.shape
        p = self.config.pool
        if g == 64 and p > 1:
            x = x.reshape(b, g // p, p, g // p, p, c).mean((2, 4))
        return x

    def forward(self, embedding: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.prepare(embedding)
        feats = self.reduce(embedding.float())
        scale, shift = self.film(text.float()).chunk(2, dim=-1)
        h = feats * (1 + scale[:, None, None]) + shift[:, None, None]
        hidden = self.mix2(_context(self.mix(_context(h))))  # (B, g, g, width)
        logits = self.out(hidden)[..., 0]  # (B, g, g); cell (i, j) covers model pixels 256/g * [i, i + 1)
        weights = torch.sigmoid(logits).flatten(1)  # where the mask is, pooled
        flat = hidden.flatten(1, 2)  # (B, g*g, width)
        inside = (flat * weights[..., None]).sum(1) / weights.sum(-1, keepdim=True).clamp_min(1.0)
        top = logits.flatten(1).topk(16, dim=1).values
        pooled = torch.cat(
            [inside, flat.mean(1), top.mean(1, keepdim=True), weights.mean(1, keepdim=True)], 1
        )
        return logits, self.presence(pooled)[:, 0]


def upsample(logits: torch.Tensor, size: int = 256) -> torch.Tensor:
    """(B, g, g) grid logits -> (B, size, size) model-frame logits (bilinear)."""
    return F.interpolate(logits[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
