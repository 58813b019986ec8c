"""Evaluation: BiRD's refer-and-ground protocol (exact), a strict protocol, segmentation metrics, reports.

Entry points: :func:`evaluate_predictions` and :func:`evaluate_segmentation`; the command is
:func:`medground.eval.command.eval_command`. Nothing here imports torch.
"""

from medground.eval.api import PROTOCOLS, evaluate_predictions, evaluate_segmentation
from medground.eval.seg_metrics import EmptyRule
from medground.eval.stats import BootstrapConfig

__all__ = ["PROTOCOLS", "BootstrapConfig", "EmptyRule", "evaluate_predictions", "evaluate_segmentation"]
