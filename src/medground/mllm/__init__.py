"""The refer-and-ground model layer: Qwen2-VL / Qwen2.5-VL / Qwen3-VL adapters, training and ``Grounder``.

Names are imported lazily (``from medground.mllm import Grounder``) so that importing
``medground.mllm.commands`` does not import torch.
"""

from __future__ import annotations

from medground.lazy import lazy_attributes

__all__ = ["FAMILIES", "Answer", "Grounder", "TrainConfig", "get_family", "predict", "train"]

_WHERE = {
    "FAMILIES": "medground.mllm.families",
    "get_family": "medground.mllm.families",
    "Answer": "medground.mllm.grounder",
    "Grounder": "medground.mllm.grounder",
    "predict": "medground.mllm.grounder",
    "TrainConfig": "medground.mllm.train",
    "train": "medground.mllm.train",
}


__getattr__ = lazy_attributes(__name__, _WHERE)
