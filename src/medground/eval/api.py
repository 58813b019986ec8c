"""Library entry points of ``medground eval``: score a predictions file or a set of masks.

Both return one plain dict (JSON-ready apart from NaN, which reports write as null) and, with
``out``, write ``report.json``, ``report.md`` and PNG plots there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medground.eval.bird import evaluate_bird
from medground.eval.report import write_report
from medground.eval.rows import load_rows
from medground.eval.stats import BootstrapConfig
from medground.eval.text_metrics import java_available
from medground.tasks import PROTOCOLS, TASKS

if TYPE_CHECKING:
    from medground.eval.seg_metrics import EmptyRule

# The strict protocol (box matching) and the mask metrics import scipy (~0.3 s): each is imported by the
# function that needs it, so `medground eval` of a BiRD predictions file starts without them.

__all__ = ["PROTOCOLS", "evaluate_predictions", "evaluate_segmentation"]


def evaluate_predictions(
    path: Path,
    task: str = "auto",
    protocol: str = "bird",
    out: Path | None = None,
    bootstrap: BootstrapConfig | None = None,
) -> dict:
    """Score a predictions JSONL (BiRD rows, medground flat rows or records + responses).

    task: ``auto`` or a task of :data:`medground.tasks.TASKS` (rec/roc/reg/mia; BiRD's vg/rc and
    aliases accepted). Results are keyed by task name (``rec``), whatever the rows called it. protocol: ``bird`` (BiRD's scripts,
    quirks included) or ``strict``. bootstrap: intervals of the strict protocol.
    Returns ``{"kind", "protocol", "source", "rows", "tasks": {task: result}, "java", "notes"}``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    rows = load_rows(Path(path), task=task)
    if not rows:
        raise ValueError(f"{path} holds no prediction rows")
    if protocol == "bird":
        tasks = evaluate_bird(rows)
    else:
        from medground.eval.strict import evaluate_strict

        tasks = evaluate_strict(rows, bootstrap or BootstrapConfig())
    notes = (
        []
        if java_available()
        else [
            "Java not found: PTB tokenizer and METEOR were skipped; "
            "install a Java runtime (e.g. default-jre-headless) to compute them"
        ]
    )
    counts = {t: sum(r.task == t for r in rows) for t in TASKS}
    result = {
        "kind": "predictions",
        "protocol": protocol,
        "source": str(path),
        "rows": len(rows),
        "rows_per_task": counts,
        "tasks": tasks,
        "java": java_available(),
        "notes": notes,
    }
    if out is not None:
        result["files"] = {k: str(v) for k, v in write_report(result, Path(out)).items()}
    return result


def evaluate_segmentation(
    pred_dir: Path | None = None,
    gt_dir: Path | None = None,
    pairs_csv: Path | None = None,
    spacing: tuple[float, ...] | None = None,
    tolerance_mm: float = 1.0,
    rule: EmptyRule | None = None,
    labels: list[int] | None = None,
    out: Path | None = None,
) -> dict:
    """Dice, IoU, HD95 and NSD of predicted masks against ground truth.

    Give ``pred_dir`` and ``gt_dir`` (paired by file name) or ``pairs_csv`` (columns pred, gt,
    optional spacing and group). spacing: mm per array axis for every case, else from the CSV or the
    NIfTI headers, else voxel units. rule: empty-mask conventions (:class:`EmptyRule`).
    """
    from medground.eval.seg_eval import evaluate_pairs, pairs_from_csv, pairs_from_dirs

    if pairs_csv is not None:
        pairs, unmatched = pairs_from_csv(Path(pairs_csv)), []
    elif pred_dir is not None and gt_dir is not None:
        pairs, unmatched = pairs_from_dirs(Path(pred_dir), Path(gt_dir))
    else:
        raise ValueError("segmentation needs --seg PRED_DIR with --gt GT_DIR, or --pairs PAIRS.csv")
    result = {
        "kind": "segmentation",
        "protocol": "segmentation",
        **evaluate_pairs(pairs, spacing, tolerance_mm, rule, labels),
        "unmatched": unmatched,
    }
    if out is not None:
        result["files"] = {k: str(v) for k, v in write_report(result, Path(out)).items()}
    return result
