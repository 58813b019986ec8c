"""``medground eval``: the thin command. It parses options, calls :mod:`medground.eval.api`, prints.

Register with ``app.command("eval")(eval_command)`` in ``medground.cli``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medground.tasks import PROTOCOLS, TASKS

__all__ = ["eval_command"]


def _spacing(text: str | None) -> tuple[float, ...] | None:
    if not text:
        return None
    try:
        return tuple(float(v) for v in text.replace(",", "x").split("x"))
    except ValueError:
        raise typer.BadParameter(f"spacing {text!r} is not like '0.8x0.8x2.5' (mm per array axis)") from None


def _labels(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"labels {text!r} is not a comma-separated list of integers") from None


def _task_help() -> str:
    """``rec (= vg) | roc | reg (= rc) | mia | auto: ...``, from the task registry (BiRD's names in brackets)."""
    names = [n if n == (s.bird_name or n) else f"{n} (= {s.bird_name})" for n, s in TASKS.items()]
    return (
        " | ".join([*names, "auto"]) + ": one task for every row, or auto (per row; see medground.eval.rows)."
    )


def eval_command(
    pred: Annotated[
        Path | None, typer.Argument(help="Predictions JSONL: BiRD inference rows or medground rows.")
    ] = None,
    task: Annotated[
        str,
        typer.Option(help=_task_help()),
    ] = "auto",
    protocol: Annotated[
        str, typer.Option(help=f"{' | '.join(PROTOCOLS)} (bird: BiRD's scripts, exactly).")
    ] = "bird",
    out: Annotated[Path | None, typer.Option(help="Folder for report.json, report.md and plots.")] = None,
    bootstrap: Annotated[
        int, typer.Option(help="Bootstrap resamples for strict intervals (0: none).")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    seg: Annotated[Path | None, typer.Option(help="Folder of predicted masks (segmentation mode).")] = None,
    gt: Annotated[
        Path | None, typer.Option(help="Folder of ground-truth masks, paired with --seg by name.")
    ] = None,
    pairs: Annotated[Path | None, typer.Option(help="CSV with columns pred, gt[, spacing][, group].")] = None,
    spacing: Annotated[
        str | None, typer.Option(help="mm per array axis for every case, e.g. 0.8x0.8x2.5.")
    ] = None,
    tolerance_mm: Annotated[float, typer.Option(help="Normalised surface Dice tolerance in mm.")] = 1.0,
    labels: Annotated[
        str | None, typer.Option(help="Score these label values separately, e.g. 1,2,3.")
    ] = None,
    empty_both: Annotated[
        str, typer.Option(help="Both masks empty: perfect (Dice 1, HD95 0) | nan.")
    ] = "perfect",
    empty_one_hd: Annotated[
        str, typer.Option(help="HD95 when one mask is empty: nan | diagonal | inf.")
    ] = "nan",
) -> None:
    """Score refer-and-ground predictions (BiRD or strict protocol) or segmentation masks."""
    from medground.eval.api import evaluate_predictions, evaluate_segmentation
    from medground.eval.report import print_report
    from medground.eval.stats import BootstrapConfig

    if seg is not None or pairs is not None:
        from medground.eval.seg_metrics import EmptyRule  # scipy: only the mask mode needs it

        try:
            rule = EmptyRule(both_empty=empty_both, one_empty_hd=empty_one_hd)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
        result = evaluate_segmentation(
            seg, gt, pairs, _spacing(spacing), tolerance_mm, rule, _labels(labels), out
        )
    elif pred is not None:
        result = evaluate_predictions(
            pred,
            task=task,
            protocol=protocol,
            out=out,
            bootstrap=BootstrapConfig(replicates=bootstrap, seed=seed),
        )
    else:
        raise typer.BadParameter(
            "give a predictions file, or --seg PRED_DIR --gt GT_DIR, or --pairs PAIRS.csv"
        )
    print_report(result)
    if out is not None:
        typer.echo(f"report written to {out}")
