"""UniverSeg (Butoi et al., ICCV 2023) re-implemented from the paper, as a baseline and benchmark.

The one new operation is the CrossConv: a convolution applied to every (query, support_i) pair of
feature maps concatenated along channels. A CrossBlock is CrossConv + LeakyReLU, after which the
query keeps the mean over the support axis and both sides get their own Conv + LeakyReLU. The encoder
has 4 CrossBlocks of 64 channels (2x2 max pooling between them), the decoder 3 (bilinear upsampling,
skip concatenation on both sides), then a 1x1 conv on the query. Inputs: query image (1 channel in
the paper), support image + label (2 channels), 128 x 128, values in [0, 1]. With the default config
this has about 1.18M parameters, as in the paper.

Cost per query grows with k at every layer and nothing about the support set can be cached: that is
exactly what :mod:`medground.icl.model` avoids. It still offers the in-context interface of our models
(``encode_support`` -> context, ``segment(queries, context)``), so training and icl-eval run it through
the same code; its "context" is the supports themselves, in gray.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from medground.icl.model import read_config, write_config

__all__ = ["CrossBlock", "CrossConv", "UniverSeg", "UniverSegConfig", "UniverSegContext"]


@dataclass
class UniverSegConfig:
    """Hyperparameters of :class:`UniverSeg` (defaults from the paper)."""

    size: int = 128
    """Side of the square working resolution."""
    encoder_widths: tuple[int, ...] = (64, 64, 64, 64)
    """Channels of the encoder CrossBlocks."""
    decoder_widths: tuple[int, ...] = (64, 64, 64)
    """Channels of the decoder CrossBlocks (one fewer than the encoder)."""
    image_channels: int = 1
    """Image channels (the paper uses gray)."""

    def __post_init__(self) -> None:
        self.encoder_widths = tuple(int(w) for w in self.encoder_widths)
        self.decoder_widths = tuple(int(w) for w in self.decoder_widths)
        if len(self.decoder_widths) != len(self.encoder_widths) - 1:
            raise ValueError(
                f"decoder_widths needs len(encoder_widths) - 1 = {len(self.encoder_widths) - 1} entries, "
                f"got {self.decoder_widths}"
            )

    def to_json(self, path) -> None:
        write_config(self, "universeg", path)

    @classmethod
    def from_json(cls, path) -> UniverSegConfig:
        return read_config(cls, path)


@dataclass
class UniverSegContext:
    """A support set as UniverSeg uses it: nothing is precomputed, every query sees every pair again.

    ``images``: (E, k, C, S, S) with C = the model's image channels; ``masks``: (E, k, 1, S, S) in [0, 1].
    """

    images: torch.Tensor
    masks: torch.Tensor


class CrossConv(nn.Module):
    """Conv over every query-support pair.

    query (B, 1, Cq, H, W) and support (B, k, Cs, H, W) -> (B, k, cout, H, W): output i is
    ``conv(cat([query, support_i], channels))``. Example: B=2, k=8, Cq=Cs=64, cout=64 runs one conv on
    16 pairs of 128 channels.
    """

    def __init__(self, cq: int, cs: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cq + cs, cout, 3, padding=1)

    def forward(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        b, k = support.shape[:2]
        pairs = torch.cat([query.expand(-1, k, -1, -1, -1), support], dim=2)  # (B, k, Cq+Cs, H, W)
        return self.conv(pairs.flatten(0, 1)).unflatten(0, (b, k))


def _vmap(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D layer to (B, n, C, H, W) by folding n into the batch."""
    return layer(x.flatten(0, 1)).unflatten(0, x.shape[:2])


class CrossBlock(nn.Module):
    """CrossConv + LeakyReLU, mean over support for the query, then one Conv + LeakyReLU per side.

    query (B, 1, Cq, H, W), support (B, k, Cs, H, W) -> (B, 1, cout, H, W), (B, k, cout, H, W).
    """

    def __init__(self, cq: int, cs: int, cout: int) -> None:
        super().__init__()
        self.cross = CrossConv(cq, cs, cout)
        self.query_conv = nn.Conv2d(cout, cout, 3, padding=1)
        self.support_conv = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, query: torch.Tensor, support: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = F.leaky_relu(self.cross(query, support))  # (B, k, cout, H, W)
        query = F.leaky_relu(_vmap(self.query_conv, z.mean(dim=1, keepdim=True)))
        support = F.leaky_relu(_vmap(self.support_conv, z))
        return query, support


class UniverSeg(nn.Module):
    """The UniverSeg network: query (B, 1, C, S, S) + support images/labels -> logits (B, 1, 1, S, S)."""

    architecture = "universeg"

    def __init__(self, config: UniverSegConfig | None = None) -> None:
        super().__init__()
        self.config = config or UniverSegConfig()
        cfg = self.config
        cq, cs = cfg.image_channels, cfg.image_channels + 1
        self.enc = nn.ModuleList()
        for w in cfg.encoder_widths:
            self.enc.append(CrossBlock(cq, cs, w))
            cq = cs = w
        skips = list(cfg.encoder_widths[-2::-1])
        self.dec = nn.ModuleList()
        for w, skip in zip(cfg.decoder_widths, skips, strict=True):
            self.dec.append(CrossBlock(cq + skip, cs + skip, w))
            cq = cs = w
        self.head = nn.Conv2d(cq, 1, 1)

    def _channels(self, images: torch.Tensor) -> torch.Tensor:
        """(..., C, S, S) -> (..., image_channels, S, S): RGB averaged to gray for the paper's 1 channel."""
        wanted = self.config.image_channels
        if images.shape[-3] == wanted:
            return images
        if wanted == 1:
            return images.mean(-3, keepdim=True)
        raise ValueError(f"UniverSeg takes {wanted} image channels, got {images.shape[-3]}")

    def encode_support(
        self, images: torch.Tensor, masks: torch.Tensor, text: torch.Tensor | None = None
    ) -> UniverSegContext:
        """images (E, k, C, S, S), masks (E, k, 1, S, S) -> context. UniverSeg takes no text (ignored)."""
        if images.shape[1] == 0:
            raise ValueError("UniverSeg needs at least one support pair; it takes no text prompt")
        return UniverSegContext(self._channels(images), masks)

    def segment(self, queries: torch.Tensor, context: UniverSegContext) -> torch.Tensor:
        """Logits for queries (E, Q, C, S, S) given a context of E episodes -> (E, Q, 1, S, S)."""
        e, q = queries.shape[:2]
        flat = self._channels(queries).flatten(0, 1)[:, None]  # (E*Q, 1, C, S, S)
        images = context.images.repeat_interleave(q, dim=0)
        masks = context.masks.repeat_interleave(q, dim=0)
        return self(flat, images, masks).reshape(e, q, 1, *queries.shape[-2:])

    def forward(self, query: torch.Tensor, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """query (B, 1, C, S, S); images (B, k, C, S, S); masks (B, k, 1, S, S) in [0, 1] -> (B, 1, 1, S, S)."""
        q, s = query, torch.cat([images, masks], dim=2)
        skips = []
        for i, block in enumerate(self.enc):
            if i > 0:
                q, s = _vmap(nn.MaxPool2d(2), q), _vmap(nn.MaxPool2d(2), s)
            q, s = block(q, s)
            skips.append((q, s))
        for block, (sq, ss) in zip(self.dec, skips[-2::-1], strict=True):
            up = nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False)
            q, s = _vmap(up, q), _vmap(up, s)
            q, s = block(torch.cat([q, sq], 2), torch.cat([s, ss], 2))
        return _vmap(self.head, q)
