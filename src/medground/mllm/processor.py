"""The processor: tokenizer + image processor + chat template, built without torchvision.

The stock Qwen processors construct a video processor, which needs torchvision; torchvision does
not import beside the CPU torch wheel. :class:`MedgroundProcessor` is a ``Qwen2VLProcessor`` that
passes no video processor: images only. It saves to and reloads from a local directory offline.
The image-placeholder rule is the same for all three families: an image resized to (H, W) becomes
``(H / patch) * (W / patch)`` patches and ``patches / merge**2`` ``<|image_pad|>`` tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medground.mllm.families import Family

__all__ = [
    "CHAT_TEMPLATE",
    "IMAGE_PAD",
    "IMAGE_PLACEHOLDER",
    "SYSTEM_PROMPT",
    "VISION_END",
    "VISION_START",
    "build_processor",
    "image_tokens",
    "load_processor",
    "processor_class",
]

IMAGE_PLACEHOLDER = "<image>"
VISION_START, VISION_END, IMAGE_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"
SYSTEM_PROMPT = "You are a helpful assistant."

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    + SYSTEM_PROMPT
    + "<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen2-VL's chat template (images only): a default system turn, then ``<|im_start|>role\\n...<|im_end|>\\n``."""

_CLASS: Any = None


def processor_class() -> Any:
    """The :class:`MedgroundProcessor` class (built on first use so that importing stays torch-free)."""
    global _CLASS
    if _CLASS is None:
        from transformers import Qwen2VLProcessor

        class MedgroundProcessor(Qwen2VLProcessor):
            """A Qwen2-VL-family processor for images only (no video processor, no torchvision)."""

            def __init__(
                self,
                image_processor: Any = None,
                tokenizer: Any = None,
                chat_template: str | None = None,
                **kwargs: Any,
            ) -> None:
                super().__init__(
                    image_processor=image_processor,
                    tokenizer=tokenizer,
                    video_processor=None,
                    chat_template=chat_template,
                    **kwargs,
                )

        _CLASS = MedgroundProcessor
    return _CLASS


def build_processor(
    family: Family, tokenizer: Any, min_pixels: int, max_pixels: int, chat_template: str = CHAT_TEMPLATE
) -> Any:
    """A processor for ``family`` around ``tokenizer`` that resizes images into [min_pixels, max_pixels]."""
    from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

    image_processor = Qwen2VLImageProcessorPil(
        patch_size=family.patch_size,
        merge_size=family.merge_size,
        temporal_patch_size=2,
        image_mean=list(family.image_mean),
        image_std=list(family.image_std),
        size={"shortest_edge": int(min_pixels), "longest_edge": int(max_pixels)},
    )
    return processor_class()(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template
    )


def load_processor(path: str | Path) -> Any:
    """Load a processor saved by :func:`build_processor` (or a stock Qwen-VL one) from a directory or hub id.

    Needs ``tokenizer.json`` (or the hub's tokenizer files) and ``processor_config.json`` or
    ``preprocessor_config.json``; a missing file raises ``FileNotFoundError`` naming the directory.
    """
    path_str = str(path)
    local = Path(path_str)
    if local.exists():
        has_images = (local / "processor_config.json").exists() or (
            local / "preprocessor_config.json"
        ).exists()
        if not has_images or not (local / "tokenizer_config.json").exists():
            raise FileNotFoundError(
                f"{local} holds no processor (expected tokenizer_config.json and processor_config.json); "
                "save one with processor.save_pretrained(dir) or point --model at a trained checkpoint"
            )
    processor = processor_class().from_pretrained(path_str)
    if processor.chat_template is None:
        processor.chat_template = CHAT_TEMPLATE
    return processor


def image_tokens(processor: Any, height: int, width: int) -> int:
    """Number of ``<|image_pad|>`` tokens an image of height x width pixels becomes."""
    from medground.grounding import smart_resize

    ip = processor.image_processor
    rh, rw = smart_resize(
        height, width, ip.patch_size * ip.merge_size, ip.size["shortest_edge"], ip.size["longest_edge"]
    )
    return (rh // ip.patch_size) * (rw // ip.patch_size) // (ip.merge_size**2)
