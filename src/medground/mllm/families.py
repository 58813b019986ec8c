"""Registry of the Qwen-VL model families the model layer adapts, with their box dialects.

Each family names its ``transformers`` classes (imported lazily, so importing this module stays
cheap), its vision patch size and spatial merge, and the box dialect its instruction tuning used
(see :mod:`medground.grounding`). A model's ``config.json`` ``model_type`` picks its family.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from medground.choices import unknown_choice
from medground.grounding import Dialect, get_dialect

__all__ = ["FAMILIES", "Family", "family_for_model_type", "get_family"]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Family:
    """One model family: its transformers classes, vision geometry and box dialect."""

    name: str
    """Registry name ("qwen2-vl", "qwen2.5-vl", "qwen3-vl"); never a dialect name."""
    model_type: str
    """``model_type`` of the family's ``config.json`` ("qwen2_vl", ...)."""
    config_class: str
    """Name of the top-level config class in ``transformers``."""
    model_class: str
    """Name of the ``...ForConditionalGeneration`` class in ``transformers``."""
    patch_size: int
    """Vision patch side in pixels (14 for Qwen2/2.5-VL, 16 for Qwen3-VL)."""
    merge_size: int = 2
    """Spatial merge: merge_size x merge_size patches become one language token."""
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    """Per-channel normalisation mean of the image processor."""
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD
    """Per-channel normalisation std of the image processor."""
    box_dialect: str = field(kw_only=True)
    """Name of the box dialect its instruction tuning used (a key of ``medground.grounding.DIALECTS``)."""

    @property
    def factor(self) -> int:
        """Image sides are resized to multiples of this many pixels (patch x merge)."""
        return self.patch_size * self.merge_size

    def config_cls(self) -> Any:
        """The ``transformers`` config class."""
        return getattr(importlib.import_module("transformers"), self.config_class)

    def model_cls(self) -> Any:
        """The ``transformers`` model class (``...ForConditionalGeneration``)."""
        return getattr(importlib.import_module("transformers"), self.model_class)

    def dialect(self, min_pixels: int, max_pixels: int, name: str | None = None) -> Dialect:
        """The family's box dialect for a processor resizing into [min_pixels, max_pixels].

        ``name``: the dialect a model was trained in (its folder's medground.json says), default
        :attr:`box_dialect`. Qwen2.5-VL writes absolute pixels of the resized input, so its dialect must
        resize exactly as the processor does; the grid dialects do not depend on the resize.
        """
        return get_dialect(name or self.box_dialect).for_processor(self.factor, min_pixels, max_pixels)


FAMILIES: dict[str, Family] = {
    "qwen2-vl": Family(
        "qwen2-vl",
        "qwen2_vl",
        "Qwen2VLConfig",
        "Qwen2VLForConditionalGeneration",
        14,
        box_dialect="qwen2-vl-norm1000",
    ),
    "qwen2.5-vl": Family(
        "qwen2.5-vl",
        "qwen2_5_vl",
        "Qwen2_5_VLConfig",
        "Qwen2_5_VLForConditionalGeneration",
        14,
        box_dialect="qwen2.5-vl-pixels",
    ),
    "qwen3-vl": Family(
        "qwen3-vl",
        "qwen3_vl",
        "Qwen3VLConfig",
        "Qwen3VLForConditionalGeneration",
        16,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
        box_dialect="qwen3-vl-norm1000",
    ),
}


def _unknown(kind: str, name: str, known: list[str]) -> KeyError:
    return KeyError(unknown_choice(kind, name, known))


def get_family(name: str) -> Family:
    """The family registered under ``name``; an unknown name lists the known ones and the closest."""
    if name in FAMILIES:
        return FAMILIES[name]
    raise _unknown("model family", name, list(FAMILIES))


def family_for_model_type(model_type: str) -> Family:
    """The family whose ``config.json`` has this ``model_type`` ("qwen2_vl" -> qwen2-vl)."""
    for family in FAMILIES.values():
        if family.model_type == model_type:
            return family
    raise _unknown("model_type", model_type, [f.model_type for f in FAMILIES.values()])
