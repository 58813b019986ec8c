"""strict_number: answers that are a count, scored by the strict protocol."""

from __future__ import annotations

import pytest

from medground.eval.report import tables
from medground.eval.rows import PredRow
from medground.eval.stats import BootstrapConfig
from medground.eval.strict import first_number, strict_number

NO_CI = BootstrapConfig(replicates=0)


def _row(annotation: str, response: str, modality: str = "histopathology", line: int = 1) -> PredRow:
    return PredRow(
        str(line),
        f"img_{line}.png",
        modality,
        None,
        "count",
        "How many?",
        annotation,
        response,
        "medground",
        line,
    )


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("There are 12 cell nuclei.", 12),
        ("There are three polyps, not 4.", 3),  # the first number counts
        ("Eleven.", 11),
        ("none that I can see", None),
        ("T9 vertebra", None),  # a digit inside a word is no number
        ("7", 7),
    ],
)
def test_first_number(text, number):
    assert first_number(text) == number


def test_accuracy_error_and_answered_by_hand():
    rows = [
        _row("There are 12 cell nuclei.", "12", line=1),  # right
        _row("There are 12 cell nuclei.", "I count ten.", line=2),  # off by 2
        _row("There is 1 polyp.", "one polyp", "endoscopy", 3),  # right, as a word
        _row("There are 3 nodules.", "I cannot tell.", "ultrasound", 4),  # no number: wrong, not in the error
        _row("No count here.", "5", line=5),  # reference without a number: skipped
    ]
    result = strict_number(rows, task="count", config=NO_CI)
    assert result["skipped"] == [{"line": 5, "id": "5", "reason": "annotation holds no number"}]
    assert result["micro"]["accuracy"] == pytest.approx(2 / 4)
    assert result["micro"]["mae"] == pytest.approx((0 + 2 + 0) / 3)
    assert result["micro"]["answered"] == pytest.approx(3 / 4)
    assert result["per_group"]["histopathology"]["accuracy"] == pytest.approx(1 / 2)
    (table,) = tables({"protocol": "strict", "tasks": {"count": result}})
    assert table.header == ["modality", "n", "accuracy", "mae", "answered"]
    assert "headline: accuracy (higher is better)" in table.notes
