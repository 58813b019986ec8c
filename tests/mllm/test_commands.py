import json
import subprocess
import sys

import typer
from PIL import Image
from typer.testing import CliRunner

from medground.mllm.commands import ask_command, predict_command, train_command

app = typer.Typer()
app.command("train")(train_command)
app.command("ask")(ask_command)
app.command("predict")(predict_command)
runner = CliRunner()


def test_importing_the_commands_does_not_import_torch():
    code = "import sys, medground.mllm.commands; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_ask_json_and_draw(overfit, tmp_path):
    image = overfit["data"] / "images" / "syn" / "img0.png"
    result = runner.invoke(
        app,
        [
            "ask",
            str(image),
            "Where is the liver?",
            "--model",
            str(overfit["qwen2-vl"]),
            "--json",
            "--draw",
            str(tmp_path / "out.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(next(line for line in result.output.splitlines() if line.startswith('{"answer"')))
    assert answer["boxes"] == [{"label": "liver", "box": [6, 8, 30, 28]}]
    assert Image.open(tmp_path / "out.png").size == (64, 48)


def test_ask_rejects_a_malformed_box_and_a_missing_model(overfit, tmp_path):
    image = overfit["data"] / "images" / "syn" / "img0.png"
    result = runner.invoke(app, ["ask", str(image), "What is at {box}?", "--box", "1,2,3"])
    assert result.exit_code == 2 and "four integers" in result.output
    result = runner.invoke(app, ["ask", str(image), "Hi", "--model", str(tmp_path / "none")])
    assert result.exit_code == 2 and "no model directory" in result.output


def test_predict_and_train_commands(overfit, tmp_path):
    out = tmp_path / "pred.jsonl"
    result = runner.invoke(
        app,
        [
            "predict",
            "--data",
            str(overfit["data"]),
            "--split",
            "test",
            "--out",
            str(out),
            "--model",
            str(overfit["qwen3-vl"]),
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 4
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(overfit["data"]),
            "--out",
            str(tmp_path / "m"),
            "--max-steps",
            "2",
            "--tiny-hidden",
            "64",
            "--max-pixels",
            "4096",
            "--preset",
            "bird",
        ],
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "m" / "medground.json").read_text())
    assert meta["train"]["preset"] == "bird" and meta["train"]["lr"] == 2e-5 and meta["max_pixels"] == 4096
