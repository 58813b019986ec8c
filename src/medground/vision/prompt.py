"""SAM's prompt encoder as LiteMedSAM uses it: boxes (model pixels) -> sparse tokens; the dense prompt and grid code.

Coordinates are in the encoder's padded 256 x 256 input frame, in pixel indices: a box ``[x0, y0, x1, y1]``
has its corners at the centres of pixels (x0, y0) and (x1, y1), both inside the box (inclusive corners,
MedSAM's training convention); the encoder shifts them by +0.5 to the pixel centre before coding them.
Coordinates are coded by random Fourier features: ``[sin, cos](2 pi (2 p - 1) @ G)`` with p in [0, 1] and
G a fixed (2, 128) matrix (``pe_layer.positional_encoding_gaussian_matrix``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medground.vision.layers import LayerNorm2d

__all__ = ["FourierCoder", "PromptEncoder"]


class FourierCoder(nn.Module):
    """Random Fourier features of 2D points: (..., 2) [x, y] in [0, 1] -> (..., 2 * F)."""

    def __init__(self, features: int = 128) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, features))

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * ((2 * xy - 1) @ self.positional_encoding_gaussian_matrix)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class PromptEncoder(nn.Module):
    """Box corners -> sparse prompt tokens; also the decoder's dense (no-mask) prompt and position code.

    The point and mask-input layers of SAM are kept as loaded parameters (``point_embeddings.0/1``,
    ``not_a_point_embed``, ``mask_downscaling``) so the checkpoint loads strictly; box prompts use
    ``point_embeddings.2/3`` (top-left / bottom-right corner) and ``no_mask_embed``.
    """

    def __init__(
        self, dim: int = 256, grid: int = 64, image_size: int = 256, mask_channels: int = 16
    ) -> None:
        super().__init__()
        self.grid, self.image_size = grid, image_size
        self.pe_layer = FourierCoder(dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, dim)
        q = mask_channels // 4
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, q, 2, 2),
            LayerNorm2d(q),
            nn.GELU(),
            nn.Conv2d(q, mask_channels, 2, 2),
            LayerNorm2d(mask_channels),
            nn.GELU(),
            nn.Conv2d(mask_channels, dim, 1),
        )
        self.no_mask_embed = nn.Embedding(1, dim)

    def dense_pe(self) -> torch.Tensor:
        """(1, dim, grid, grid): the code of each embedding cell's centre."""
        centres = (
            torch.arange(self.grid, dtype=torch.float32, device=self.no_mask_embed.weight.device) + 0.5
        ) / self.grid
        ys, xs = torch.meshgrid(centres, centres, indexing="ij")
        return self.pe_layer(torch.stack([xs, ys], dim=-1)).permute(2, 0, 1)[None]

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """(B, 4) float [x0, y0, x1, y1] in model pixels (inclusive corners) -> (B, 2, dim) corner tokens."""
        corners = (boxes.reshape(-1, 2, 2).float() + 0.5) / self.image_size
        tokens = self.pe_layer(corners)
        return tokens + torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])[None]

    def no_mask(self, batch: int) -> torch.Tensor:
        """(B, dim, grid, grid): the dense prompt when no mask is given."""
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, self.grid, self.grid)
