"""Pure array preparation for in-context segmentation: user frame <-> the model's square working frame.

Images: (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA (alpha dropped), any integer or float dtype ->
(3, S, S) float32 in [0, 1] (min-max scaled per image, gray repeated). Masks: (H, W) of any dtype,
foreground = value > 0 (so 0/255, 0/1, bool and instance-id maps all work) -> (1, S, S) float32
area fractions. Probabilities go back with bilinear interpolation to the original (H, W).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from medground.vision.frames import check_image

__all__ = ["check_pair", "prepare_image", "prepare_mask", "resize_back", "to_rgb_float"]


def to_rgb_float(image: np.ndarray, name: str = "image") -> np.ndarray:
    """(H, W) | (H, W, 1|3|4) any dtype -> (H, W, 3) float32 in [0, 1], min-max scaled per image."""
    arr = check_image(image, name)
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def _resize(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size)."""
    if mode == "area":
        return F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def prepare_image(image: np.ndarray, size: int, name: str = "image") -> torch.Tensor:
    """(H, W[, C]) array -> (3, size, size) float32 in [0, 1]."""
    arr = torch.from_numpy(np.ascontiguousarray(to_rgb_float(image, name))).permute(2, 0, 1)
    return _resize(arr[None], size, "bilinear")[0].clamp(0, 1)


def prepare_mask(mask: np.ndarray, size: int, name: str = "mask") -> torch.Tensor:
    """(H, W) array, foreground = value > 0 -> (1, size, size) float32 in [0, 1] (area fractions)."""
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2D (H, W) mask, got shape {np.shape(mask)}")
    fg = torch.from_numpy((arr > 0).astype(np.float32))
    return _resize(fg[None, None], size, "area")[0]


def check_pair(image: np.ndarray, mask: np.ndarray, index: int) -> None:
    """Raise ValueError unless support pair ``index`` has matching (H, W) and a non-empty mask."""
    ih, iw = np.shape(image)[:2]
    mh, mw = np.shape(mask)[:2]
    if (ih, iw) != (mh, mw):
        raise ValueError(
            f"support pair {index}: image is {iw}x{ih} (WxH) but its mask is {mw}x{mh}; "
            "pass the mask that belongs to this image, at the same size"
        )
    if not np.any(np.asarray(mask) > 0):
        raise ValueError(
            f"support pair {index}: the mask is empty (no pixel > 0); an example must show the structure. "
            "Drop this pair or fix the mask"
        )


def resize_back(logits: torch.Tensor, height: int, width: int) -> np.ndarray:
    """(S, S) logits -> (height, width) float32 probabilities in [0, 1]."""
    up = F.interpolate(logits[None, None].float(), size=(height, width), mode="bilinear", align_corners=False)
    return torch.sigmoid(up)[0, 0].numpy().astype(np.float32)
