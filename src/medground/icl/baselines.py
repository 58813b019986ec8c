"""Baselines for in-context segmentation: (a) the support prior, (b) a small U-Net trained on the k supports.

(c), the UniverSeg architecture, lives in :mod:`medground.icl.universeg`.
All tensors are at the working size S: images (n, 3, S, S) in [0, 1], masks (n, 1, S, S) in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from medground.icl.augment import AugmentConfig, augment_examples, augment_task
from medground.icl.model import ConvBlock, Encoder, standardize

__all__ = ["UNET_STEPS", "SmallUNet", "support_prior", "unet_from_scratch"]

UNET_STEPS = 60
"""Training steps of baseline (b): the one default of ``unet_from_scratch``, ``icl-eval`` and every bench."""


def support_prior(masks: torch.Tensor, n_queries: int) -> torch.Tensor:
    """Baseline (a): the mean of the k support masks (k, 1, S, S), the same for every query -> (n_queries, 1, S, S)."""
    return masks.mean(0, keepdim=True).expand(n_queries, -1, -1, -1).clone()


class SmallUNet(nn.Module):
    """Plain U-Net: (N, 3, S, S) -> logits (N, 1, S, S)."""

    def __init__(self, widths: tuple[int, ...] = (8, 16, 32)) -> None:
        super().__init__()
        self.encoder = Encoder(3, widths)
        self.up = nn.ModuleList(
            ConvBlock(widths[i] + widths[i + 1], widths[i]) for i in range(len(widths) - 1)
        )
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(standardize(x))
        y = feats[-1]
        for level in range(len(feats) - 2, -1, -1):
            y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
            y = self.up[level](torch.cat([y, feats[level]], 1))
        return self.head(y)


def unet_from_scratch(
    images: torch.Tensor,
    masks: torch.Tensor,
    queries: torch.Tensor,
    steps: int = UNET_STEPS,
    seed: int = 0,
    lr: float = 3e-3,
) -> torch.Tensor:
    """Baseline (b): train a fresh :class:`SmallUNet` on the k supports only (augmented), predict queries.

    images (k, 3, S, S), masks (k, 1, S, S), queries (Q, 3, S, S) -> probabilities (Q, 1, S, S).
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = SmallUNet()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    aug = AugmentConfig(p_invert=0.0, p_rot90=0.0)
    for _ in range(steps):
        x, y = augment_task(images, masks, gen, aug)
        x, y = augment_examples(x, y, gen, aug)
        logits = net(x)
        prob = torch.sigmoid(logits).flatten(1)
        dice = (2 * (prob * y.flatten(1)).sum(1) + 1) / (prob.sum(1) + y.flatten(1).sum(1) + 1)
        loss = F.binary_cross_entropy_with_logits(logits, y) + (1 - dice).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        return torch.sigmoid(net(queries))
