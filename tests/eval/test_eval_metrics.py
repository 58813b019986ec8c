"""Scorers declare their metrics; reports, plots and tables read only the declaration."""

from __future__ import annotations

import numpy as np
import pytest

from medground.eval.bird import bird_roc, bird_text, bird_vg
from medground.eval.metrics import MetricSpec, declared, declares, headline, in_group
from medground.eval.plots import _task_series
from medground.eval.report import markdown, tables
from medground.eval.rows import PredRow
from medground.eval.stats import BootstrapConfig, aggregate, safe_div
from medground.eval.strict import strict_absence, strict_rec, strict_roc, strict_text

NO_CI = BootstrapConfig(replicates=0)


def _row(response: str, annotation: str = "liver", modality: str = "ct") -> PredRow:
    return PredRow("1", f"{modality}_1.png", modality, modality, "roc", "q", annotation, response, "bird", 1)


@declares(
    MetricSpec("accuracy", "headline"),
    MetricSpec("toy_length", direction="lower", digits=1),  # a metric nothing else knows about
)
def toy_scorer(rows: list[PredRow], task: str, config: BootstrapConfig) -> dict:
    """Exact-match accuracy and the mean response length, per modality and pooled."""
    cols = {
        "correct": np.asarray([r.response == r.annotation for r in rows], dtype=float),
        "length": np.asarray([len(r.response) for r in rows], dtype=float),
        "items": np.ones(len(rows)),
    }
    metrics = {
        "accuracy": lambda s: safe_div(s["correct"], s["items"]),
        "toy_length": lambda s: safe_div(s["length"], s["items"]),
    }
    return {"task": task, **aggregate(cols, [r.modality for r in rows], metrics, config)}


def test_a_new_metric_reaches_tables_plots_and_markdown_with_no_other_edit():
    rows = [_row("liver"), _row("spleen"), _row("liver", modality="mr")]
    res = toy_scorer(rows, task="roc", config=NO_CI)
    result = {"protocol": "strict", "tasks": {"roc": res}}
    (table,) = tables(result)
    assert table.header == ["modality", "n", "accuracy", "toy_length"]
    # by hand: ct 1 of 2 right, lengths 5 and 6 -> 5.5; mr 1 of 1, length 5; micro 2/3, 16/3
    assert table.rows[0] == ["ct", "2", "0.5000", "5.5"]
    assert table.rows[2] == ["micro", "3", "0.6667", "5.3"]
    assert "headline: accuracy (higher is better)" in table.notes
    groups, series = _task_series("strict", res)
    assert groups == ["ct", "mr"] and series == {"accuracy": [0.5, 1.0], "toy_length": [5.5, 5.0]}
    assert "| micro | 3 | 0.6667 | 5.3 |" in markdown(result)


def test_declarations_travel_with_the_result_and_the_function():
    res = toy_scorer([_row("liver")], task="roc", config=NO_CI)
    assert declared(res) == toy_scorer.metrics
    assert headline(res) == MetricSpec("accuracy", "headline")
    assert headline({"micro": {}}) is None  # a result saved before declarations


def test_bad_declarations_fail_at_import():
    with pytest.raises(ValueError, match="exactly one headline"):
        declares(MetricSpec("a"), MetricSpec("b"))
    with pytest.raises(ValueError, match="exactly one headline"):
        declares(MetricSpec("a", "headline"), MetricSpec("b", "headline"))
    with pytest.raises(ValueError, match="declared twice"):
        declares(MetricSpec("a", "headline"), MetricSpec("a"))
    with pytest.raises(ValueError, match="direction 'up'"):
        MetricSpec("a", direction="up")
    with pytest.raises(ValueError, match="role 'main'"):
        MetricSpec("a", "main")


def test_groups_put_the_headline_table_first():
    specs = [
        MetricSpec("p@low", group="low"),
        MetricSpec("f1@high", "headline", group="high"),
        MetricSpec("f1@low", group="low"),
        MetricSpec("mean"),  # no group: the headline's table
    ]
    groups = in_group({"metrics": [m.__dict__ for m in specs]})
    assert {k: [m.name for m in v] for k, v in groups.items()} == {
        "high": ["f1@high", "mean"],
        "low": ["p@low", "f1@low"],
    }
    assert list(groups) == ["high", "low"]


@pytest.mark.parametrize(
    ("scorer", "head", "digits"),
    [
        (bird_vg, "recall@0.5", 6),
        (bird_roc, "accuracy", 6),
        (bird_text, "CIDEr", 6),
        (strict_rec, "f1@0.5", 4),
        (strict_roc, "accuracy", 4),
        (strict_text, "CIDEr", 4),
        (strict_absence, "f1", 4),
    ],
)
def test_every_shipped_scorer_declares_its_headline(scorer, head, digits):
    (main,) = [m for m in scorer.metrics if m.role == "headline"]
    assert (main.name, main.direction, main.digits) == (head, "higher", digits)
