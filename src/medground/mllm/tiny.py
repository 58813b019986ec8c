"""``--base tiny``: a small model of a Qwen-VL family built from a config and trained from scratch.

The tokenizer is a byte-level BPE trained offline (``tokenizers``) on the dataset's text, plus the
Qwen special tokens, so the token ids of ``<|image_pad|>`` etc. are those of this tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from medground.mllm.families import Family

__all__ = [
    "SPECIAL_TOKENS",
    "TinyConfig",
    "build_tiny",
    "tiny_model_config",
    "train_tokenizer",
    "vision_token_ids",
]

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
"""Qwen2-VL's special tokens, in this order at ids 0..13 of a tiny tokenizer."""


@dataclass(frozen=True)
class TinyConfig:
    """Sizes of a tiny model; defaults give about 1-3 M parameters (vocab dependent)."""

    vocab_size: int = 2048
    """Target BPE vocabulary size, special tokens included (smaller if the text has fewer merges)."""
    hidden_size: int = 128
    """Language model width (also the vision merger's output width)."""
    num_layers: int = 2
    """Language model decoder layers."""
    num_heads: int = 4
    """Language attention heads (head_dim = hidden_size / num_heads; must be divisible by 8)."""
    num_kv_heads: int = 2
    """Language key/value heads (grouped-query attention)."""
    intermediate_size: int = 256
    """Language MLP width."""
    vision_width: int = 64
    """Vision transformer width."""
    vision_depth: int = 2
    """Vision transformer blocks."""
    vision_heads: int = 2
    """Vision attention heads."""
    max_positions: int = 4096
    """Maximum sequence length."""

    def __post_init__(self) -> None:
        head_dim, rest = divmod(self.hidden_size, self.num_heads)
        if rest or head_dim % 8:
            raise ValueError(
                f"hidden_size / num_heads must be a multiple of 8, got {self.hidden_size}/{self.num_heads}"
            )


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> Any:
    """A byte-level BPE fast tokenizer trained on ``texts`` with :data:`SPECIAL_TOKENS` at ids 0..13.

    Digits are always single tokens (as in Qwen's tokenizer), so "(412,787)" is ``( 4 1 2 , 7 8 7 )``.

    Deterministic for the same texts in the same order. Returns a ``transformers`` fast tokenizer with
    ``eos = <|im_end|>`` and ``pad = <|endoftext|>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Digits one by one, as Qwen's tokenizer does: box coordinates become digit sequences.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        model_max_length=32768,
    )


def _text_config(cfg: TinyConfig, vocab: int, tokenizer: Any, family: Family) -> dict[str, Any]:
    head_dim = cfg.hidden_size // cfg.num_heads
    pairs = head_dim // 2  # rotary frequency pairs, split over (t, h, w)
    spatial = (3 * pairs) // 8
    section = [pairs - 2 * spatial, spatial, spatial]  # rotary pairs for t, h, w (Qwen2-VL: 16, 24, 24)
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section}
    text: dict[str, Any] = {
        "vocab_size": vocab,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "max_position_embeddings": cfg.max_positions,
        "rope_parameters": rope,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if family.name == "qwen3-vl":
        text["head_dim"] = head_dim
        rope["mrope_interleaved"] = True
    else:
        text["bos_token_id"] = tokenizer.pad_token_id
        text["eos_token_id"] = tokenizer.eos_token_id
    return text


def _vision_config(cfg: TinyConfig, family: Family) -> dict[str, Any]:
    common = {
        "depth": cfg.vision_depth,
        "num_heads": cfg.vision_heads,
        "patch_size": family.patch_size,
        "spatial_merge_size": family.merge_size,
    }
    if family.name == "qwen2-vl":
        return {**common, "embed_dim": cfg.vision_width, "hidden_size": cfg.hidden_size}
    extra: dict[str, Any] = {
        "hidden_size": cfg.vision_width,
        "intermediate_size": 2 * cfg.vision_width,
        "out_hidden_size": cfg.hidden_size,
    }
    if family.name == "qwen2.5-vl":
        extra |= {"window_size": family.factor * 2, "fullatt_block_indexes": [cfg.vision_depth - 1]}
    else:
        extra |= {"num_position_embeddings": 256, "deepstack_visual_indexes": [cfg.vision_depth - 1]}
    return {**common, **extra}


def vision_token_ids(tokenizer: Any) -> dict[str, int]:
    """The Qwen-VL config's image/video/vision start/end token ids, read from ``tokenizer``."""
    return {
        name: tokenizer.convert_tokens_to_ids(tok)
        for name, tok in (
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        )
    }


def tiny_model_config(family: Family, tokenizer: Any, cfg: TinyConfig | None = None) -> Any:
    """The ``transformers`` config of a tiny ``family`` model whose special-token ids follow ``tokenizer``."""
    cfg = cfg or TinyConfig()
    ids = vision_token_ids(tokenizer)
    return family.config_cls()(
        text_config=_text_config(cfg, len(tokenizer), tokenizer, family),
        vision_config=_vision_config(cfg, family),
        tie_word_embeddings=True,
        **ids,
    )


def build_tiny(
    family: Family, texts: Iterable[str], cfg: TinyConfig | None = None, seed: int = 0
) -> tuple[Any, Any]:
    """(model, tokenizer): a randomly initialised tiny ``family`` model and its BPE tokenizer trained on ``texts``."""
    import torch

    cfg = cfg or TinyConfig()
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    config = tiny_model_config(family, tokenizer, cfg)
    torch.manual_seed(seed)
    model = family.model_cls()(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
