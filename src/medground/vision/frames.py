"""The one place where images, boxes and masks move between the user's pixels and LiteMedSAM's frame.

Model frame: the image's longest side is resized to 256 (bilinear, antialiased), the other side to
``round(side * 256 / longest)``; the resized image is min-max scaled to [0, 1] (all channels together)
and zero padded at the bottom/right to 256 x 256; gray images are repeated to 3 channels, alpha dropped.

Boxes: ours are ``[x0, y0, x1, y1)`` in input pixels with x1/y1 exclusive; the model's are pixel indices
of the two corner pixels *inside* the box (MedSAM's training boxes are mask extents), so
``[x0, y0, x1 - 1, y1 - 1] * scale``. Masks: the model's 256 x 256 logits are cropped to the resized
image and resized bilinearly back to the input's (H, W).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

__all__ = ["MODEL_SIZE", "Frame", "check_box", "check_image", "prepare_image"]

MODEL_SIZE = 256
"""Side of LiteMedSAM's square input, pixels."""


@dataclass(frozen=True)
class Frame:
    """How one (height, width) input sits in the model's square input of side ``size``."""

    height: int
    width: int
    size: int = MODEL_SIZE

    @property
    def scale(self) -> float:
        """Model pixels per input pixel."""
        return self.size / max(self.height, self.width)

    @property
    def resized(self) -> tuple[int, int]:
        """(rows, cols) of the resized image inside the padded square (top-left aligned)."""
        return int(self.height * self.scale + 0.5), int(self.width * self.scale + 0.5)

    def box_to_model(self, box: np.ndarray | list[float]) -> np.ndarray:
        """(4,) or (N, 4) ``[x0, y0, x1, y1)`` input pixels -> same shape float32 model-frame corner pixels."""
        b = np.asarray(box, dtype=np.float64)
        corners = b - np.array([0.0, 0.0, 1.0, 1.0])  # exclusive -> last pixel inside
        return (corners * self.scale).astype(np.float32)

    def box_from_model(self, box: np.ndarray | list[float]) -> np.ndarray:
        """Inverse of :meth:`box_to_model`: model-frame corner pixels -> ``[x0, y0, x1, y1)`` input pixels (float)."""
        return np.asarray(box, dtype=np.float64) / self.scale + np.array([0.0, 0.0, 1.0, 1.0])

    def to_input(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, size, size) model-frame logits -> (B, height, width) logits (crop the padding, bilinear resize)."""
        rows, cols = self.resized
        crop = logits[:, None, :rows, :cols]
        out = F.interpolate(crop, size=(self.height, self.width), mode="bilinear", align_corners=False)
        return out[:, 0]


def check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) numeric array -> (H, W, 3) float32 (raw values); ValueError else."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        arr = arr[..., :3] if arr.shape[2] >= 3 else arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 1:
        raise ValueError(
            f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {np.shape(image)}"
        )
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name}: expected numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: has NaN or infinite pixels; replace them before segmenting")
    return arr


def prepare_image(
    image: np.ndarray, size: int = MODEL_SIZE, name: str = "image"
) -> tuple[torch.Tensor, Frame]:
    """(H, W[, C]) image -> ((3, size, size) float32 model input in [0, 1], its :class:`Frame`)."""
    arr = check_image(image, name)
    frame = Frame(arr.shape[0], arr.shape[1], size)
    rows, cols = frame.resized
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None]
    if (rows, cols) != (frame.height, frame.width):
        x = F.interpolate(x, size=(rows, cols), mode="bilinear", align_corners=False, antialias=True)
    lo, hi = x.min(), x.max()
    x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
    out = torch.zeros(3, size, size)
    out[:, :rows, :cols] = x[0]
    return out, frame


def check_box(box, height: int, width: int, name: str = "box") -> tuple[int, int, int, int]:
    """Validate ``[x0, y0, x1, y1]`` (x1/y1 exclusive) against a ``width x height`` image -> ints.

    Raises ValueError naming the box and the image size when it is not 4 numbers, empty, or not
    inside the image (0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height).
    """
    values = np.asarray(box, dtype=np.float64).ravel() if np.ndim(box) else np.empty(0)
    if values.size != 4 or not np.all(np.isfinite(values)):
        raise ValueError(f"{name} {box!r}: expected 4 numbers [x0, y0, x1, y1] in pixels (x1, y1 exclusive)")
    x0, y0, x1, y1 = (int(round(v)) for v in values)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(
            f"{name} {[x0, y0, x1, y1]} is empty or outside the {width}x{height} (WxH) image; "
            f"need 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}"
        )
    return x0, y0, x1, y1
