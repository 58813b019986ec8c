"""Task and example augmentation for episodic training, in torch (no torchvision).

Task-level transforms (flips, 90-degree rotation, intensity inversion, gamma, channel shuffle) are
drawn once per episode and applied to all its images and masks, so the episode stays one consistent
task; example-level transforms (random crop/zoom + elastic warp, brightness/contrast, noise) are drawn
per image. All functions take images (n, 3, S, S) in [0, 1] and masks (n, 1, S, S) in [0, 1] and
return new tensors of the same shapes; randomness comes only from the given ``torch.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812

__all__ = ["AugmentConfig", "augment_examples", "augment_task"]


@dataclass
class AugmentConfig:
    """Probabilities and strengths of the augmentations."""

    p_flip: float = 0.5
    """Probability of each of the horizontal and vertical task flips."""
    p_rot90: float = 0.3
    """Probability of a task-level 90-degree rotation."""
    p_invert: float = 0.15
    """Probability of task-level intensity inversion."""
    gamma: float = 0.4
    """Task gamma = exp(u), u ~ U(-gamma, gamma)."""
    zoom: float = 0.25
    """Per-example crop/zoom: scale ~ U(1 - zoom, 1 + zoom), shift up to zoom / 2 of the side."""
    elastic: float = 0.04
    """Per-example elastic displacement amplitude, as a fraction of the image side."""
    contrast: float = 0.2
    """Per-example contrast/brightness jitter amplitude."""
    noise: float = 0.03
    """Per-example Gaussian noise standard deviation."""


def _u(gen: torch.Generator, *shape: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    return torch.rand(*shape, generator=gen) * (hi - lo) + lo


def augment_task(
    images: torch.Tensor, masks: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random task-level transform applied to every image/mask of an episode."""
    if _u(gen, 1) < cfg.p_flip:
        images, masks = images.flip(-1), masks.flip(-1)
    if _u(gen, 1) < cfg.p_flip:
        images, masks = images.flip(-2), masks.flip(-2)
    if _u(gen, 1) < cfg.p_rot90:
        images, masks = images.rot90(1, (-2, -1)), masks.rot90(1, (-2, -1))
    if _u(gen, 1) < cfg.p_invert:
        images = 1.0 - images
    gamma = float(torch.exp(_u(gen, 1, lo=-cfg.gamma, hi=cfg.gamma)))
    images = images.clamp(0, 1) ** gamma
    if _u(gen, 1) < 0.2:
        images = images[:, torch.randperm(3, generator=gen)]
    return images.contiguous(), masks.contiguous()


def _warp_grid(n: int, size: int, gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """Sampling grid (n, S, S, 2) in [-1, 1]: random zoom/shift plus a smooth elastic field."""
    scale = _u(gen, n, 1, 1, 1, lo=1 - cfg.zoom, hi=1 + cfg.zoom)
    shift = _u(gen, n, 1, 1, 2, lo=-cfg.zoom / 2, hi=cfg.zoom / 2)
    lin = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    base = torch.stack([xx, yy], -1)[None]  # (1, S, S, 2) as (x, y)
    coarse = torch.randn(n, 2, 4, 4, generator=gen) * (2 * cfg.elastic)
    field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    return base * scale + shift + field


def augment_examples(
    images: torch.Tensor, masks: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent per-example geometric (zoom/shift/elastic) and intensity transforms."""
    n, _, size, _ = images.shape
    grid = _warp_grid(n, size, gen, cfg)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    masks = F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    contrast = _u(gen, n, 1, 1, 1, lo=1 - cfg.contrast, hi=1 + cfg.contrast)
    bright = _u(gen, n, 1, 1, 1, lo=-cfg.contrast / 2, hi=cfg.contrast / 2)
    images = (images - 0.5) * contrast + 0.5 + bright + torch.randn(images.shape, generator=gen) * cfg.noise
    return images.clamp(0, 1), masks.clamp(0, 1)
