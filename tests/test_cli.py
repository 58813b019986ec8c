import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medground.cli import app

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "medground" / "sample" / "medseg"
runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["build"], ["export"], ["report"], ["eval"], ["demo"]])
def test_help_everywhere(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_build_then_export_through_the_cli(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["build", str(SAMPLE / "kvasir_seg_endoscopy"), "--out", str(out), "--no-progress", "--no-report"],
    )
    assert result.exit_code == 0, result.output
    assert "3 records from 3 images" in result.output
    # the sample declares its patients (meta.json "cases": "dataset"): no unknown-patient warning
    assert "the patients of" not in result.stderr
    result = runner.invoke(app, ["export", str(out), "--format", "sharegpt"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in Path(result.stdout.strip()).read_text().splitlines()]
    assert len(rows) == 3 and rows[0]["messages"][0]["role"] == "user"
    # The build's default tags are plain characters to Qwen2/2.5/3-VL templates: the export says so.
    assert result.stderr.count("warning: exporting boxes in the qwen-vl-grid dialect") == 1


def test_bad_source_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["build", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "unknown layout" in result.output


def test_source_that_yields_nothing_warns(tmp_path):
    result = runner.invoke(
        app,
        [
            "build",
            str(SAMPLE / "kvasir_seg_endoscopy"),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
            "--no-report",
            "--min-area-fraction",
            "0.9",
        ],
    )
    assert result.exit_code == 0 and "warning: kvasir_seg_endoscopy" in result.output
