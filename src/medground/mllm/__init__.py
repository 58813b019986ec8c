"""The refer-and-ground model layer: Qwen2-VL / Qwen2.5-VL / Qwen3-VL adapters, training and ``Grounder``.

Names are imported lazily (``from medground.mllm import Grounder``) so that importing
``medground.mllm.commands`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'medground.mllm' has no attribute {name!r}")
