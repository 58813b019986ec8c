"""Optional test-time adaptation: fine-tune a copy of an in-context model on its own support set for a few steps.

Pure in-context use needs no gradient step; this trades a few seconds per support set (not per query:
the adapted model then encodes the support once as usual) for accuracy on far-out-of-distribution
tasks. Each step builds an episode from the support set alone: the k examples are augmented twice
(task-level + per-example transforms), one augmented copy serves as support and the other as queries.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from medground.icl.augment import AugmentConfig, augment_examples, augment_task

__all__ = ["adapt_to_support"]


def adapt_to_support(
    model: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    steps: int = 20,
    lr: float = 5e-4,
    seed: int = 0,
) -> nn.Module:
    """A fine-tuned copy of ``model`` (the original is untouched), in eval mode.

    images (k, 3, S, S) in [0, 1], masks (k, 1, S, S) in [0, 1], k >= 1.
    """
    from medground.icl.train import seg_loss

    net = copy.deepcopy(model).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    aug = AugmentConfig(p_invert=0.0, p_rot90=0.0)
    for _ in range(steps):
        x, y = augment_task(images, masks, gen, aug)
        sx, sy = augment_examples(x, y, gen, aug)
        qx, qy = augment_examples(x, y, gen, aug)
        with torch.enable_grad():
            loss = seg_loss(net(qx[None], sx[None], sy[None]), qy[None])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()
