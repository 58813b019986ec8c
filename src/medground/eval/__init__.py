"""Evaluation: BiRD's refer-and-ground protocol (exact), a strict protocol, segmentation metrics, reports.

Entry points: :func:`evaluate_predictions` and :func:`evaluate_segmentation`; the command is
:func:`medground.eval.command.eval_command`. Nothing here imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medground.lazy import lazy_attributes

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


__getattr__ = lazy_attributes(__name__, _WHERE)
