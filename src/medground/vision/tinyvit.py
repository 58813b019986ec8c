"""TinyViT image encoder as LiteMedSAM uses it: (B, 3, 256, 256) in [0, 1] -> (B, 256, 64, 64) embedding.

Stages (resolution, width): a 1x1 conv stem keeps 256 x 256 (64 channels); stage 0 is two inverted
residual conv blocks at 256; each later stage is entered through a patch merge (1x1 conv, 3x3 depthwise
conv with stride 2, 2, then 1, 1x1 conv) and holds windowed-attention blocks: 128 x 128 (128 ch, windows
7), 64 x 64 (160 ch, windows 14), 64 x 64 (320 ch, windows 7). A neck maps 320 -> 256 channels.

Windowed attention pads the map with zeros at the bottom/right to a multiple of the window *before* the
attention's LayerNorm, so padded tokens take part as keys (as in the weights' training). Each head adds a
learned bias indexed by the window offset ``|dy| * w + |dx|`` (:func:`offset_index`).

Parameter names follow the checkpoint's (``patch_embed.seq.0.c``, ``layers.1.blocks.0.attn.qkv``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from medground.vision.layers import ConvBN, LayerNorm2d

__all__ = ["TinyViT", "TinyViTConfig", "offset_index"]


@dataclass(frozen=True)
class TinyViTConfig:
    """Hyperparameters of :class:`TinyViT` (defaults: LiteMedSAM's)."""

    image_size: int = 256
    """Side of the square input image, pixels."""
    widths: tuple[int, ...] = (64, 128, 160, 320)
    """Channels of each stage."""
    depths: tuple[int, ...] = (2, 2, 6, 2)
    """Blocks per stage (stage 0: conv blocks, later: attention blocks)."""
    heads: tuple[int, ...] = (2, 4, 5, 10)
    """Attention heads per stage (stage 0 has no attention)."""
    windows: tuple[int, ...] = (7, 7, 14, 7)
    """Attention window side per stage."""
    merge_strides: tuple[int, ...] = (2, 2, 1)
    """Stride of the depthwise conv of the patch merge entering stage i + 1."""
    mlp_ratio: int = 4
    """Hidden width of the attention blocks' MLP, times the stage width."""
    conv_expand: int = 4
    """Hidden width of stage 0's conv blocks, times the stage width."""
    out_channels: int = 256
    """Channels of the embedding the neck returns."""

    @property
    def embedding_size(self) -> int:
        """Side of the output embedding (64 for 256 inputs)."""
        size = self.image_size
        for stride in self.merge_strides:
            size = (size + stride - 1) // stride
        return size


def offset_index(window: int) -> torch.Tensor:
    """(w*w, w*w) int64: bias slot of each (query, key) pair of a window, ``|dy| * w + |dx|``, tokens row-major."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    return (ys[:, None] - ys[None, :]).abs() * window + (xs[:, None] - xs[None, :]).abs()


class ConvBlock(nn.Module):
    """Inverted residual block, (B, C, H, W) -> same: 1x1 expand, 3x3 depthwise, 1x1 project, + input, GELU."""

    def __init__(self, dim: int, expand: int) -> None:
        super().__init__()
        hidden = dim * expand
        self.conv1 = ConvBN(dim, hidden, 1)
        self.conv2 = ConvBN(hidden, hidden, 3, padding=1, groups=hidden)
        self.conv3 = ConvBN(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))
        return F.gelu(x + y)


class PatchMerge(nn.Module):
    """(B, C, H, W) -> (B, H', W', C') channels last: 1x1 conv, GELU, depthwise 3x3 (stride s), GELU, 1x1 conv."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim, 1)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride=stride, padding=1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x))))).permute(0, 2, 3, 1)


class WindowAttention(nn.Module):
    """Multi-head attention inside one window with learned offset biases: (N, w*w, C) -> same."""

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(heads, window * window))
        self.register_buffer("bias_index", offset_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, dim = x.shape
        # qkv features are laid out per head: (head, [q | k | v]) with head_dim each
        qkv = self.qkv(self.norm(x)).view(n, tokens, self.heads, 3 * self.head_dim).transpose(1, 2)
        q, k, v = qkv.split(self.head_dim, dim=-1)  # each (N, heads, tokens, head_dim)
        bias = self.attention_biases[:, self.bias_index]  # (heads, tokens, tokens)
        scores = torch.baddbmm(
            bias.expand(n, -1, -1, -1).reshape(-1, tokens, tokens),
            q.reshape(-1, tokens, self.head_dim),
            k.reshape(-1, tokens, self.head_dim).transpose(1, 2),
            alpha=self.head_dim**-0.5,
        )  # (N * heads, tokens, tokens)
        out = torch.bmm(scores.softmax(-1), v.reshape(-1, tokens, self.head_dim)).view(
            n, self.heads, tokens, -1
        )
        return self.proj(out.transpose(1, 2).reshape(n, tokens, dim))


class Mlp(nn.Module):
    """LayerNorm, Linear, GELU, Linear on the last axis."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class AttentionBlock(nn.Module):
    """(B, H, W, C) -> same: windowed attention (+ input), depthwise 3x3 conv, MLP (+ input)."""

    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: int) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, heads, window)
        self.local_conv = ConvBN(dim, dim, 3, padding=1, groups=dim)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        s = self.window
        pad_h, pad_w = -h % s, -w % s
        y = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # zeros at the bottom/right
        rows, cols = (h + pad_h) // s, (w + pad_w) // s
        # (B, rows*s, cols*s, C) -> (B*rows*cols windows, s*s tokens, C)
        y = y.view(b, rows, s, cols, s, c).transpose(2, 3).reshape(b * rows * cols, s * s, c)
        y = self.attn(y).view(b, rows, cols, s, s, c).transpose(2, 3).reshape(b, rows * s, cols * s, c)
        x = x + y[:, :h, :w]
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class Stage(nn.Module):
    """A list of blocks then an optional patch merge (``blocks``, ``downsample``: the checkpoint's names)."""

    def __init__(self, blocks: list[nn.Module], downsample: PatchMerge | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample


class TinyViT(nn.Module):
    """(B, 3, S, S) float in [0, 1] (S = ``config.image_size``) -> (B, 256, S/4, S/4) image embedding."""

    def __init__(self, config: TinyViTConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or TinyViTConfig()
        w = cfg.widths
        self.patch_embed = nn.Module()
        self.patch_embed.seq = nn.Sequential(ConvBN(3, w[0] // 2, 1), nn.GELU(), ConvBN(w[0] // 2, w[0], 1))
        stages = []
        for i, depth in enumerate(cfg.depths):
            if i == 0:
                blocks: list[nn.Module] = [ConvBlock(w[0], cfg.conv_expand) for _ in range(depth)]
            else:
                blocks = [
                    AttentionBlock(w[i], cfg.heads[i], cfg.windows[i], cfg.mlp_ratio) for _ in range(depth)
                ]
            merge = PatchMerge(w[i], w[i + 1], cfg.merge_strides[i]) if i + 1 < len(w) else None
            stages.append(Stage(blocks, merge))
        self.layers = nn.ModuleList(stages)
        out = cfg.out_channels
        self.neck = nn.Sequential(
            nn.Conv2d(w[-1], out, 1, bias=False),
            LayerNorm2d(out),
            nn.Conv2d(out, out, 3, padding=1, bias=False),
            LayerNorm2d(out),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.seq(image)  # (B, C0, S, S)
        for block in self.layers[0].blocks:
            x = block(x)
        x = self.layers[0].downsample(x)  # channels last from here on
        for stage in self.layers[1:]:
            for block in stage.blocks:
                x = block(x)
            if stage.downsample is not None:
                x = stage.downsample(x.permute(0, 3, 1, 2))
        return self.neck(x.permute(0, 3, 1, 2))
