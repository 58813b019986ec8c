"""Evaluation: BiRD's refer-and-ground protocol (exact), a strict protocol, segmentation metrics, reports.

Entry points: :func:`evaluate_predictions` and :func:`evaluate_segmentation`; the command is
:func:`medground.eval.command.eval_command`. Nothing here imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medground.eval.api import PROTOCOLS, evaluate_predictions, evaluate_segmentation
    from medground.eval.seg_metrics import EmptyRule
    from medground.eval.stats import BootstrapConfig

__all__ = ["PROTOCOLS", "BootstrapConfig", "EmptyRule", "evaluate_predictions", "evaluate_segmentation"]

_WHERE = {
    "PROTOCOLS": "medground.eval.api",
    "evaluate_predictions": "medground.eval.api",
    "evaluate_segmentation": "medground.eval.api",
    "EmptyRule": "medground.eval.seg_metrics",
    "BootstrapConfig": "medground.eval.stats",
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use, so ``medground.eval.command`` (the CLI) loads no scipy."""
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'medground.eval' has no attribute {name!r}")
