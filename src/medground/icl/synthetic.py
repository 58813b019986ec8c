"""Synthetic segmentation tasks: random label maps with per-task textures (after UniverSeg's synthetic tasks).

A synthetic task fixes a smoothness, a number of labels, a mean intensity/colour and a texture per label
and which label is the target. Each example draws a fresh label map (argmax of smooth random fields),
so shapes vary from example to example while the appearance rule stays fixed: the model must infer
"which region looks like the masked one" from the support set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

__all__ = ["synthetic_episode"]


def _smooth_noise(n: int, channels: int, size: int, cells: int, gen: torch.Generator) -> torch.Tensor:
    """(n, channels, size, size) smooth random fields made from a cells x cells grid, bicubic upsampled."""
    coarse = torch.randn(n, channels, cells, cells, generator=gen)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)


def synthetic_episode(n: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n examples of one new random task: images (n, 3, size, size) in [0, 1], masks (n, 1, size, size) 0/1.

    Every mask is non-empty (the target label is forced to own the pixel of its strongest field).
    """
    labels = int(torch.randint(3, 9, (1,), generator=gen))
    cells = int(torch.randint(3, 9, (1,), generator=gen))
    colours = torch.rand(labels, 3, generator=gen)  # per-label mean RGB
    if torch.rand(1, generator=gen) < 0.5:
        colours = colours.mean(1, keepdim=True).expand(-1, 3).clone()  # gray task
    texture_amp = torch.rand(labels, generator=gen) * 0.3
    texture_cells = int(torch.randint(8, max(9, size // 2), (1,), generator=gen))
    target = int(torch.randint(0, labels, (1,), generator=gen))

    fields = _smooth_noise(n, labels, size, cells, gen)  # (n, L, S, S)
    label_map = fields.argmax(1)  # (n, S, S)
    strongest = fields[:, target].flatten(1).argmax(1)  # force a non-empty target
    label_map.view(n, -1)[torch.arange(n), strongest] = target
    onehot = F.one_hot(label_map, labels).permute(0, 3, 1, 2).float()  # (n, L, S, S)

    texture = _smooth_noise(n, labels, size, texture_cells, gen) * texture_amp[None, :, None, None]
    intensity = torch.einsum("nlhw,lc->nchw", onehot, colours) + (onehot * texture).sum(1, keepdim=True)
    blur = torch.tensor([1.0, 2.0, 1.0]) / 4
    kernel = (blur[:, None] * blur[None, :]).expand(3, 1, 3, 3)
    images = F.conv2d(F.pad(intensity, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    images = images + torch.randn(images.shape, generator=gen) * 0.02
    masks = (label_map == target).float()[:, None]
    return images.clamp(0, 1), masks
