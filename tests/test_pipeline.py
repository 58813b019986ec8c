"""The three parts together, as a user runs them: build records, predict with the shipped model, evaluate."""

import json
from pathlib import Path

from typer.testing import CliRunner

from medground.cli import app

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "medground" / "sample" / "medseg"
runner = CliRunner()


def test_build_predict_evaluate(tmp_path):
    data, preds, report = tmp_path / "data", tmp_path / "pred.jsonl", tmp_path / "report"
    result = runner.invoke(
        app,
        [
            "build",
            str(SAMPLE / "shenzhen_cxr_lung_xray"),
            str(SAMPLE / "kvasir_seg_endoscopy"),
            "--out",
            str(data),
            "--no-progress",
            "--no-report",
            "--dialect",
            "qwen2-vl",
        ],
    )
    assert result.exit_code == 0, result.output
    split = json.loads((data / "records" / "shard-00000.jsonl").read_text().splitlines()[0])["split"]
    result = runner.invoke(
        app, ["predict", "--data", str(data), "--split", split, "--out", str(preds), "--limit", "2"]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert rows and {"id", "question", "annotation", "response", "task", "modality", "dialect"} <= set(
        rows[0]
    )
    result = runner.invoke(
        app, ["eval", str(preds), "--protocol", "strict", "--out", str(report), "--bootstrap", "0"]
    )
    assert result.exit_code == 0, result.output
    scores = json.loads((report / "report.json").read_text())
    assert scores["rows"] == len(rows) and scores["protocol"] == "strict"
