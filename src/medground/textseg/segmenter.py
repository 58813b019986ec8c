"""TextSegmenter: ``segment --text NAME`` without examples, on the frozen LiteMedSAM encoder, saying "not found".

Pipeline (model frame of :mod:`medground.vision.frames` throughout, 256 x 256): the image's embedding
(shared :func:`medground.vision.default_encoder`), the name's MiniLM vector, :class:`TextSegHead` ->
coarse grid logits and a presence probability; when the presence is below the threshold calibrated on
val, the answer is an empty mask and ``found=False``. Else the coarse mask (bilinear to 256, > 0.5),
and, for names whose val Dice gained from it, each connected component's box sent to LiteMedSAM's
box-prompted decoder (the union of its masks replaces the coarse mask). Masks come back at the image's size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from scipy import ndimage

from medground.textseg.model import HeadConfig, TextSegHead, upsample
from medground.vision.frames import MODEL_SIZE, Frame

__all__ = ["WEIGHTS", "TextSegResult", "TextSegmenter", "component_boxes", "refine_with_boxes"]

WEIGHTS = Path(__file__).with_name("weights")
"""Folder of the shipped head: ``head.safetensors`` and ``config.json``."""

MAX_COMPONENTS = 8
"""Largest connected components sent to the box decoder; smaller ones keep their coarse mask."""


@dataclass(frozen=True)
class TextSegResult:
    """``mask`` (H, W) bool at the image's size (all False when not found), ``probability`` of presence,
    ``found`` (probability >= ``threshold``), ``refined`` (the box decoder drew the mask)."""

    mask: np.ndarray
    probability: float
    found: bool
    threshold: float
    refined: bool


def component_boxes(mask: np.ndarray, limit: int = MAX_COMPONENTS, min_area: int = 16) -> list[list[int]]:
    """(256, 256) bool -> up to ``limit`` boxes of its largest 8-connected components of >= ``min_area``
    pixels, as the decoder's inclusive corner pixels ``[x0, y0, x1, y1]`` (model frame)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return []
    areas = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    keep = [i + 1 for i in np.argsort(-areas)[:limit] if areas[i] >= min_area]
    slices = ndimage.find_objects(labels)
    return [[s[1].start, s[0].start, s[1].stop - 1, s[0].stop - 1] for i in keep for s in [slices[i - 1]]]


@torch.inference_mode()
def refine_with_boxes(model, embedding: torch.Tensor, coarse: np.ndarray) -> np.ndarray:
    """LiteMedSAM ``model``, (1, 256, 64, 64) embedding, (256, 256) bool coarse mask -> (256, 256) bool:
    the union of the decoder's masks for its components' boxes, the smaller components kept as they are."""
    boxes = component_boxes(coarse)
    if not boxes:
        return coarse
    labels, _ = ndimage.label(coarse, structure=np.ones((3, 3)))
    sparse = model.prompt_encoder.embed_boxes(torch.tensor(boxes, dtype=torch.float32))
    dense = model.prompt_encoder.no_mask(len(boxes))
    logits, _ = model.mask_decoder(embedding.float(), model.prompt_encoder.dense_pe(), sparse, dense)
    out = (logits > 0).any(0).numpy()
    refined = {int(labels[b[1] : b[3] + 1, b[0] : b[2] + 1].max()) for b in boxes}  # noqa: E203
    rest = coarse & ~np.isin(labels, list(refined))
    return out | rest


class TextSegmenter:
    """The shipped head (``folder``: ``head.safetensors`` + ``config.json``) on the shared encoder."""

    def __init__(self, folder: Path = WEIGHTS) -> None:
        cfg_path = folder / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(
                f"{cfg_path}: no text-segmentation head here; train one with bench/bench_textseg.py"
            )
        self.config = json.loads(cfg_path.read_text())
        self.head = TextSegHead(HeadConfig(**self.config["head"]))
        self.head.load_state_dict(load_file(str(folder / "head.safetensors")), strict=True)
        self.head.eval()
        self.threshold = float(self.config["threshold"])
        self.refine_names = set(self.config["refine_names"])
        self._text = None

    def text_vector(self, name: str) -> torch.Tensor:
        """(384,) MiniLM vector of ``name``."""
        if self._text is None:
            from medground.icl.text import TextEncoder

            self._text = TextEncoder()
        return self._text.encode([name])[0]

    @torch.inference_mode()
    def segment(self, image: np.ndarray, name: str, encoder=None) -> TextSegResult:
        """(H, W[, C]) image and a structure name -> :class:`TextSegResult` (mask at the image's size)."""
        from medground.vision import default_encoder

        if not name.strip():
            raise ValueError("text: expected a structure name such as 'spleen', got an empty string")
        encoder = encoder or default_encoder()
        emb = encoder.embed(image)
        grid, presence = self.head(emb.embedding, self.text_vector(name.strip())[None])
        prob = float(torch.sigmoid(presence)[0])
        frame: Frame = emb.frame
        if prob < self.threshold:
            return TextSegResult(
                np.zeros((frame.height, frame.width), bool), prob, False, self.threshold, False
            )
        coarse = (upsample(grid, MODEL_SIZE)[0] > 0).numpy()
        rows, cols = frame.resized
        coarse[rows:], coarse[:, cols:] = False, False
        refined = name.strip() in self.refine_names
        mask = refine_with_boxes(encoder.model, emb.embedding, coarse) if refined else coarse
        full = frame.to_input(torch.from_numpy(mask.astype(np.float32))[None] * 2 - 1)[0] > 0
        return TextSegResult(full.numpy(), prob, True, self.threshold, refined)
