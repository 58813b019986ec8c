"""Segment from a box prompt (k = 0 plus a box, like MedSAM): BoxSeg, its crop/paste geometry and baselines.

Frames. A box is ``[x0, y0, x1, y1]`` in pixels of the query image, x1/y1 exclusive (as
:func:`medground.types.tight_box`). The model never sees the whole image: :func:`crop_window` expands
the box by ``margin`` of its side plus ``pad`` pixels per side (the window may reach past the image
border; those pixels are zero), the window is resized to ``S x S`` (S = ``config.size``) and
:class:`BoxSeg` predicts mask logits there; :func:`paste_back` resizes them to the window and puts them
into an ``(H, W)`` probability map that is zero outside the window.

Input channels at ``S x S`` (see :func:`box_inputs`): the image (3, RGB in [0, 1] min-max scaled over
the whole image like the in-context preprocessing, standardised per window by the model), the box
rectangle (1, area fractions), the ellipse inscribed in the box (1, 0/1 at the S x S pixel centres), an
optional probability prior (1, e.g. the in-context segmenter's map from supports or text) and a flag
saying whether that prior is given (1). So one network serves "box alone" and "box plus examples".

The network predicts a correction to the inscribed ellipse: its logits are the U-Net's output plus
``+-ELLIPSE_LOGIT`` inside/outside the ellipse, and the output layer starts at zero, so an untrained
BoxSeg returns the ellipse. The ellipse is the strongest box-only baseline on round structures (fetal
heads, optic discs); a small model trained from scratch on a few thousand regions did not reach it there
(bench/RESULTS.md, "Segment from a box"), so it learns where the structure departs from it instead.

Baselines from the same box (:func:`box_fill`, :func:`box_ellipse`, :func:`box_grabcut`) return
(H, W) bool masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from safetensors.torch import load_file
from torch import nn

from medground.icl.model import (
    ConvBlock,
    Encoder,
    check_unet_widths,
    model_folder_files,
    read_config,
    save_model_folder,
    standardize,
    write_config,
)
from medground.icl.preprocess import to_rgb_float
from medground.vision.frames import check_box

__all__ = [
    "BOX_WEIGHTS",
    "BoxSeg",
    "BoxSegConfig",
    "box_ellipse",
    "box_fill",
    "box_grabcut",
    "box_inputs",
    "check_box",
    "crop_window",
    "load_boxseg",
    "paste_back",
    "save_boxseg",
    "segment_boxes",
]

BOX_WEIGHTS = Path(__file__).resolve().parent / "weights" / "box"
"""The shipped box-prompt model folder (config.json + model.safetensors + TRAINING.md)."""

Window = tuple[int, int, int, int]
"""Crop window (x0, y0, x1, y1), integers, x1/y1 exclusive, in query pixels; may extend past the image."""


@dataclass
class BoxSegConfig:
    """Hyperparameters of :class:`BoxSeg`; saved as ``config.json`` beside the weights."""

    size: int = 64
    """Side of the square working window (the box crop is resized to size x size)."""
    widths: tuple[int, ...] = (16, 32, 48, 64)
    """Channels per U-Net scale; scale l has resolution size / 2**l."""
    margin: float = 0.2
    """Context around the box: this fraction of the box width/height is added on each side..."""
    pad: int = 4
    """...plus this many pixels (so tiny boxes still show their surroundings)."""
    version: int = 2
    """Config format version (2: seven input channels and the ellipse residual; 1 had six, no ellipse)."""

    def __post_init__(self) -> None:
        self.widths = check_unet_widths("widths", self.widths, self.size)
        if self.version != 2:
            raise ValueError(
                f"box model config version {self.version}: this medground reads version 2 (the inscribed "
                "ellipse channel); retrain the model with `python -m medground.icl.boxtrain`"
            )

    def to_json(self, path: Path) -> None:
        write_config(self, "boxseg", path)

    @classmethod
    def from_json(cls, path: Path) -> BoxSegConfig:
        return read_config(cls, path)


IN_CHANNELS = 7
"""image RGB (3) + box rectangle (1) + inscribed ellipse (1) + prior probability (1) + prior-given flag (1)."""
ELLIPSE, PRIOR, PRIOR_GIVEN = 4, 5, 6
"""Channel indices of the inscribed ellipse, the prior probability and its flag."""
ELLIPSE_LOGIT = 2.0
"""Logit added inside the ellipse (subtracted outside): sigmoid(2) = 0.88, so untrained = the ellipse."""


class BoxSeg(nn.Module):
    """A small U-Net on the box window: (N, 7, S, S) inputs -> (N, 1, S, S) mask logits, a learned
    correction to the inscribed ellipse (zero at initialisation)."""

    architecture = "boxseg"

    def __init__(self, config: BoxSegConfig | None = None) -> None:
        super().__init__()
        self.config = config or BoxSegConfig()
        w = self.config.widths
        self.encoder = Encoder(IN_CHANNELS, w)
        self.up = nn.ModuleList(ConvBlock(w[i] + w[i + 1], w[i]) for i in range(len(w) - 1))
        self.head = nn.Conv2d(w[0], 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = standardize(x[:, :3])
        skips = self.encoder(torch.cat([image, x[:, 3:]], 1))
        y = skips[-1]
        for level in range(len(skips) - 2, -1, -1):
            y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
            y = self.up[level](torch.cat([y, skips[level]], 1))
        return self.head(y) + ELLIPSE_LOGIT * (2 * x[:, ELLIPSE : ELLIPSE + 1] - 1)


def save_boxseg(model: BoxSeg, folder: Path) -> Path:
    """Write ``folder/config.json`` and ``folder/model.safetensors``."""
    return save_model_folder(model, folder)


def load_boxseg(folder: Path | None = None) -> BoxSeg:
    """Rebuild a :class:`BoxSeg` from a folder of :func:`save_boxseg` (default: the shipped one), eval mode."""
    folder = Path(folder) if folder is not None else BOX_WEIGHTS
    cfg, weights = model_folder_files(folder, "box model folder", "medground.icl.boxtrain")
    model = BoxSeg(BoxSegConfig.from_json(cfg))
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


def crop_window(box: tuple[int, int, int, int], margin: float, pad: int) -> Window:
    """The box expanded by ``margin`` of its width/height plus ``pad`` pixels per side (may pass the border)."""
    x0, y0, x1, y1 = box
    mx, my = margin * (x1 - x0) + pad, margin * (y1 - y0) + pad
    return int(np.floor(x0 - mx)), int(np.floor(y0 - my)), int(np.ceil(x1 + mx)), int(np.ceil(y1 + my))


def _cut(array: np.ndarray, window: Window) -> np.ndarray:
    """(H, W[, C]) array -> its (wh, ww[, C]) window, zero where the window passes the border."""
    wx0, wy0, wx1, wy1 = window
    h, w = array.shape[:2]
    out = np.zeros((wy1 - wy0, wx1 - wx0, *array.shape[2:]), dtype=array.dtype)
    sx0, sy0, sx1, sy1 = max(wx0, 0), max(wy0, 0), min(wx1, w), min(wy1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - wy0 : sy1 - wy0, sx0 - wx0 : sx1 - wx0] = array[sy0:sy1, sx0:sx1]
    return out


def _to_size(x: np.ndarray, size: int, mode: str) -> torch.Tensor:
    """(h, w, C) float array -> (C, size, size) tensor ('bilinear' antialiased or 'area')."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(2, 0, 1)[None]
    if mode == "area":
        return F.interpolate(t, size=(size, size), mode="area")[0]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


def box_inputs(
    rgb: np.ndarray,
    box: tuple[int, int, int, int],
    config: BoxSegConfig,
    prior: np.ndarray | None = None,
) -> tuple[torch.Tensor, Window]:
    """Model inputs for one box: rgb (H, W, 3) float in [0, 1] (:func:`to_rgb_float`; uint8 is read as
    value / 255), a checked box, an optional (H, W) prior probability map -> ((7, S, S) float32, crop window)."""
    window = crop_window(box, config.margin, config.pad)
    wx0, wy0, wx1, wy1 = window
    s = config.size
    crop = _cut(rgb, window)
    crop = crop.astype(np.float32) / 255.0 if crop.dtype == np.uint8 else crop
    image = _to_size(crop, s, "bilinear").clamp(0, 1)
    rect = np.zeros((wy1 - wy0, wx1 - wx0, 1), dtype=np.float32)
    x0, y0, x1, y1 = box
    rect[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0] = 1.0
    rect_t = _to_size(rect, s, "area")
    # the inscribed ellipse at the S x S pixel centres, mapped back into query pixels
    centres = (np.arange(s) + 0.5) / s
    inside = _inside_ellipse(box, wx0 + centres * (wx1 - wx0), wy0 + centres * (wy1 - wy0))
    ellipse = torch.from_numpy(inside).float()[None]
    if prior is None:
        extra = torch.zeros(2, s, s)
    else:
        p = _to_size(_cut(np.asarray(prior, dtype=np.float32)[..., None], window), s, "bilinear").clamp(0, 1)
        extra = torch.cat([p, torch.ones(1, s, s)])
    return torch.cat([image, rect_t, ellipse, extra]), window


def paste_back(logits: torch.Tensor, window: Window, height: int, width: int) -> np.ndarray:
    """(S, S) logits in the window -> (height, width) float32 probabilities, zero outside the window."""
    wx0, wy0, wx1, wy1 = window
    up = F.interpolate(
        logits[None, None].float(), size=(wy1 - wy0, wx1 - wx0), mode="bilinear", align_corners=False
    )
    prob = torch.sigmoid(up)[0, 0].numpy()
    out = np.zeros((height, width), dtype=np.float32)
    sx0, sy0, sx1, sy1 = max(wx0, 0), max(wy0, 0), min(wx1, width), min(wy1, height)
    out[sy0:sy1, sx0:sx1] = prob[sy0 - wy0 : sy1 - wy0, sx0 - wx0 : sx1 - wx0]
    return out


@torch.no_grad()
def segment_boxes(
    model: BoxSeg,
    image: np.ndarray,
    boxes: list[tuple[int, int, int, int]],
    priors: list[np.ndarray | None] | None = None,
) -> list[np.ndarray]:
    """One image (H, W[, C]) and checked boxes (+ optional (H, W) priors) -> (H, W) float32 probabilities."""
    rgb = to_rgb_float(image)
    h, w = rgb.shape[:2]
    priors = priors if priors is not None else [None] * len(boxes)
    inputs = [box_inputs(rgb, b, model.config, p) for b, p in zip(boxes, priors, strict=True)]
    logits = model(torch.stack([x for x, _ in inputs]))[:, 0]
    return [paste_back(lg, win, h, w) for lg, (_, win) in zip(logits, inputs, strict=True)]


# ---------------------------------------------------------------------------- baselines from the same box
def box_fill(box: tuple[int, int, int, int], height: int, width: int) -> np.ndarray:
    """The box itself as the mask: (height, width) bool."""
    x0, y0, x1, y1 = box
    out = np.zeros((height, width), dtype=bool)
    out[y0:y1, x0:x1] = True
    return out


def _inside_ellipse(box: tuple[int, int, int, int], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(len(ys), len(xs)) bool: which points (x, y) of the grid xs x ys (query pixels) lie in the ellipse
    inscribed in the box: ((x - cx) / a)^2 + ((y - cy) / b)^2 <= 1, a = width/2, b = height/2 of the box."""
    x0, y0, x1, y1 = box
    cx, cy, a, b = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return ((xs[None, :] - cx) / a) ** 2 + ((ys[:, None] - cy) / b) ** 2 <= 1.0


def box_ellipse(box: tuple[int, int, int, int], height: int, width: int) -> np.ndarray:
    """The ellipse inscribed in the box at the pixel centres (x + 0.5, y + 0.5): (height, width) bool."""
    return _inside_ellipse(box, np.arange(width) + 0.5, np.arange(height) + 0.5)


def box_grabcut(
    image: np.ndarray, box: tuple[int, int, int, int], iterations: int = 5, window: Window | None = None
) -> np.ndarray:
    """OpenCV GrabCut initialised with the box (GC_INIT_WITH_RECT) -> (H, W) bool.

    ``window``: run on this crop (clipped to the image) instead of the whole image, e.g. the model's own
    :func:`crop_window`, so both see the same surroundings (and GrabCut's colour models stay local).
    Returns the filled box when the rectangle leaves GrabCut no background pixel (box = whole crop).
    Needs opencv-python-headless (the ``dev`` extra)."""
    import cv2

    rgb = (to_rgb_float(image) * 255).round().astype(np.uint8)
    h, w = rgb.shape[:2]
    cx0, cy0, cx1, cy1 = (0, 0, w, h) if window is None else window
    cx0, cy0, cx1, cy1 = max(cx0, 0), max(cy0, 0), min(cx1, w), min(cy1, h)
    x0, y0, x1, y1 = box
    if x0 <= cx0 and y0 <= cy0 and x1 >= cx1 and y1 >= cy1:
        return box_fill(box, h, w)
    crop = np.ascontiguousarray(rgb[cy0:cy1, cx0:cx1])
    mask = np.zeros(crop.shape[:2], np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    rect = (x0 - cx0, y0 - cy0, x1 - x0, y1 - y0)
    cv2.grabCut(crop, mask, rect, bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
    out = np.zeros((h, w), dtype=bool)
    out[cy0:cy1, cx0:cx1] = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    return out
