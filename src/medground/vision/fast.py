"""A faster CPU copy of the image encoder for inference: batch norms folded into their convs, channels last,
1x1 convolutions as matrix products.

Same function as :class:`~medground.vision.tinyvit.TinyViT` in eval mode (the equivalence test holds it to
the wheel's outputs like the eager encoder); the folded weights differ from the loaded ones only by float
rounding. Not for training (batch norm statistics are gone).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from medground.vision.layers import ConvBN
from medground.vision.tinyvit import TinyViT

__all__ = ["fold_conv_bn", "inference_encoder", "served_encoder"]


@torch.no_grad()
def fold_conv_bn(block: ConvBN) -> nn.Conv2d:
    """A Conv2d with bias computing ``block`` in eval mode: w' = w * g / sqrt(v + eps), b' = beta - m * g / sqrt(v + eps)."""
    conv, bn = block.c, block.bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        groups=conv.groups,
        bias=True,
    )
    fused.weight.copy_(conv.weight * scale[:, None, None, None])
    fused.bias.copy_(bn.bias - bn.running_mean * scale)
    return fused


class Pointwise(nn.Module):
    """A 1x1 convolution as a matrix product over the channels of a channels-last (B, C, H, W) tensor."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach()[:, :, 0, 0].clone(), requires_grad=False)
        self.bias = (
            None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) channels last is (B, H, W, C) in memory: both permutes are views
        return F.linear(x.permute(0, 2, 3, 1), self.weight, self.bias).permute(0, 3, 1, 2)


def _is_pointwise(conv: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.groups == 1
    )


def _rewrite(module: nn.Module) -> None:
    """Fold every ConvBN, then turn every 1x1 convolution into :class:`Pointwise`, in place."""
    for name, child in module.named_children():
        if isinstance(child, ConvBN):
            child = fold_conv_bn(child)
        if _is_pointwise(child):
            child = Pointwise(child)
        if child is not getattr(module, name):
            setattr(module, name, child)
        else:
            _rewrite(child)


def inference_encoder(encoder: TinyViT) -> nn.Module:
    """A folded, channels-last copy of ``encoder``: (B, 3, 256, 256) -> (B, 256, 64, 64), as the original."""
    fast = copy.deepcopy(encoder).eval()
    _rewrite(fast)
    fast = fast.to(memory_format=torch.channels_last)
    for p in fast.parameters():
        p.requires_grad_(False)

    class ChannelsLast(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = fast

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.inner(images.contiguous(memory_format=torch.channels_last)).contiguous()

    return ChannelsLast().eval()


def served_encoder(
    encoder: TinyViT, image_size: int = 256, cache: Path | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The fastest available CPU runtime of ``encoder``: ONNX Runtime (:mod:`medground.vision.onnx`; CPU
    times in bench/RESULTS.md) when ``onnxruntime`` is installed, else :func:`inference_encoder`.
    ``cache``: the weights cache folder."""
    from medground.vision.onnx import onnx_encoder, onnxruntime_available

    if onnxruntime_available():
        return onnx_encoder(encoder, image_size, cache)
    return inference_encoder(encoder)
