"""Small layers shared by the encoder and the decoder: conv + batch norm, and LayerNorm over channels."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvBN", "LayerNorm2d"]


class ConvBN(nn.Module):
    """Conv2d without bias then BatchNorm2d (``c``, ``bn``: the checkpoint's names); (B, Cin, H, W) -> (B, Cout, H', W')."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, groups: int = 1
    ) -> None:
        super().__init__()
        self.c = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.c(x))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of (B, C, H, W), epsilon 1e-6 (SAM's neck and decoder)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).square().mean(1, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight[:, None, None] + self.bias[
            :, None, None
        ]
