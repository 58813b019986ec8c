"""SAM's mask decoder as LiteMedSAM uses it: image embedding + prompt tokens -> 4x upsampled mask logits.

A two-way transformer (2 layers, 8 heads, width 256) lets output tokens (1 IoU token, 4 mask tokens) and
prompt tokens attend to the image and the image attend back; the first mask token's output, mapped by an
MLP, weights the channels of the upsampled image features (dot product per pixel) to give the logits.
Only the single-mask output (mask token 0) is used, like MedSAM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from medground.vision.layers import LayerNorm2d

__all__ = ["MaskDecoder"]


class Attention(nn.Module):
    """Multi-head attention with q/k/v projected to ``dim // downsample``: (B, Nq, C), (B, Nk, C) -> (B, Nq, C)."""

    def __init__(self, dim: int, heads: int, downsample: int = 1) -> None:
        super().__init__()
        inner = dim // downsample
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(dim, inner) for _ in range(3))
        self.out_proj = nn.Linear(inner, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)  # (B, heads, N, c/heads)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = F.scaled_dot_product_attention(
            self._split(self.q_proj(q)), self._split(self.k_proj(k)), self._split(self.v_proj(v))
        )
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    """Linear layers with ReLU between them (``layers.i``), (..., in) -> (..., out)."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class FeedForward(nn.Module):
    """``lin1``, ReLU, ``lin2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(x)))


class TwoWayLayer(nn.Module):
    """Tokens self-attend, tokens attend to the image, token MLP, image attends to tokens; post-norm."""

    def __init__(self, dim: int, heads: int, mlp: int, first: bool) -> None:
        super().__init__()
        self.first = first  # the first layer's self-attention sees the tokens without their position code
        self.self_attn = Attention(dim, heads)
        self.cross_attn_token_to_image = Attention(dim, heads, 2)
        self.mlp = FeedForward(dim, mlp)
        self.cross_attn_image_to_token = Attention(dim, heads, 2)
        self.norm1, self.norm2, self.norm3, self.norm4 = (nn.LayerNorm(dim) for _ in range(4))

    def forward(
        self, tokens: torch.Tensor, image: torch.Tensor, token_pe: torch.Tensor, image_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.first:
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        tokens = self.norm1(tokens)
        tokens = self.norm2(
            tokens + self.cross_attn_token_to_image(tokens + token_pe, image + image_pe, image)
        )
        tokens = self.norm3(tokens + self.mlp(tokens))
        image = self.norm4(
            image + self.cross_attn_image_to_token(image + image_pe, tokens + token_pe, tokens)
        )
        return tokens, image


class TwoWayTransformer(nn.Module):
    """(B, N, C) tokens and (B, HW, C) image -> both updated; a final token-to-image attention and norm."""

    def __init__(self, dim: int = 256, heads: int = 8, mlp: int = 2048, depth: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TwoWayLayer(dim, heads, mlp, first=i == 0) for i in range(depth))
        self.final_attn_token_to_image = Attention(dim, heads, 2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(
        self, tokens: torch.Tensor, image: torch.Tensor, image_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        token_pe = tokens
        for layer in self.layers:
            tokens, image = layer(tokens, image, token_pe, image_pe)
        out = self.final_attn_token_to_image(tokens + token_pe, image + image_pe, image)
        return self.norm_final_attn(tokens + out), image


class MaskDecoder(nn.Module):
    """Image embedding (B, C, g, g) + sparse prompt tokens (B, N, C) -> mask logits (B, 4g, 4g), IoU score (B,)."""

    def __init__(self, dim: int = 256, masks: int = 4) -> None:
        super().__init__()
        self.transformer = TwoWayTransformer(dim)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(masks, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, 2, 2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, 2, 2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(Mlp([dim, dim, dim, dim // 8]) for _ in range(masks))
        self.iou_prediction_head = Mlp([dim, dim, dim, masks])

    def forward(
        self, embedding: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """embedding (1 or B, C, g, g), image_pe (1, C, g, g), sparse (B, N, C), dense (B, C, g, g)."""
        b, _, g, _ = dense.shape
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight])[None].expand(b, -1, -1)
        tokens = torch.cat([out_tokens, sparse], dim=1)
        image = (embedding + dense).flatten(2).transpose(1, 2)  # (B, g*g, C)
        pe = image_pe.flatten(2).transpose(1, 2).expand(b, -1, -1)
        tokens, image = self.transformer(tokens, image, pe)
        features = self.output_upscaling(image.transpose(1, 2).reshape(b, -1, g, g))  # (B, C/8, 4g, 4g)
        weights = self.output_hypernetworks_mlps[0](tokens[:, 1])  # (B, C/8)
        logits = torch.einsum("bc,bchw->bhw", weights, features)
        return logits, self.iou_prediction_head(tokens[:, 0])[:, 0]
