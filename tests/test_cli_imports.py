"""The CLI starts at once: the commands that need no model never import torch or transformers.

Each check runs the real CLI in a fresh interpreter (``sys.modules`` of this test process already holds
everything other tests imported) and reads which heavy packages that interpreter loaded after each
command. Commands run in order in one interpreter (modules only accumulate), so the first step whose
set grows names the command that pulled a package in.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import medground.eval
import medground.icl

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "medground" / "sample" / "medseg"

MODEL_STACK = ("torch", "transformers", "peft", "accelerate")
"""Never imported by the data engine, export, report or the text evaluation."""

SLOW_READERS = ("matplotlib", "scipy", "datasets", "pycocotools", "nibabel", "pydicom")
"""Fine inside the commands that draw, segment or read such files, never for ``--help``."""

# Runs ``medground`` with each argv of argv[1] (JSON) in turn; prints, per step, its exit code and the
# heavy packages loaded so far, as one JSON line on stdout after the commands' own output.
PROBE = """
import json, sys
from medground.cli import app
watched = json.loads(sys.argv[2])
steps = []
for argv in json.loads(sys.argv[1]):
    code = 0
    try:
        app(argv, prog_name="medground")
    except SystemExit as stop:
        code = stop.code
    steps.append({"argv": argv, "code": code, "loaded": sorted(m for m in watched if m in sys.modules)})
print("PROBE " + json.dumps(steps))
"""


def _run_cli(steps: list[list[str]], cwd: Path) -> list[dict]:
    watched = [*MODEL_STACK, *SLOW_READERS]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(steps), json.dumps(watched)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines()[::-1] if x.startswith("PROBE "))
    return json.loads(line.removeprefix("PROBE "))


def _bird_vg_predictions(path: Path) -> Path:
    """Two BiRD VG rows (the inference scripts' fields), one exact box and one partial answer."""
    rows = [
        {
            "id": "1",
            "image": "ct_1.png",
            "question": "Where is the liver?",
            "annotation": "<ref>liver</ref><box>(100,100),(200,200)</box>",
            "response": "<ref>liver</ref><box>(100,100),(200,200)</box>",
        },
        {
            "id": "2",
            "image": "mr_2.png",
            "question": "Where is the kidney?",
            "annotation": "<ref>kidney</ref><box>(0,0),(100,100)</box>",
            "response": "(0,0),(100,40)",
        },
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_help_loads_neither_models_nor_slow_readers(tmp_path):
    steps = _run_cli(
        [["--help"], ["build", "--help"], ["export", "--help"], ["report", "--help"], ["eval", "--help"]],
        tmp_path,
    )
    for step in steps:
        assert step["code"] == 0, step
        assert step["loaded"] == [], step


def test_build_export_report_eval_never_import_the_model_stack(tmp_path):
    build = tmp_path / "build"
    preds = _bird_vg_predictions(tmp_path / "test_VG_pred.jsonl")
    steps = _run_cli(
        [
            [
                "build",
                str(SAMPLE / "kvasir_seg_endoscopy"),
                "--out",
                str(build),
                "--no-progress",
                "--no-report",
            ],
            ["export", str(build), "--format", "sharegpt"],
            ["report", str(build)],
            ["eval", str(preds)],
            ["eval", str(preds), "--protocol", "strict", "--task", "vg", "--bootstrap", "20"],
        ],
        tmp_path,
    )
    assert [s["code"] for s in steps] == [0] * 5, steps
    assert (
        len((build / "export" / "sharegpt_qwen-vl-grid.jsonl").read_text().splitlines()) == 3
    )  # kvasir: 3 images
    assert (build / "report" / "report.html").is_file()
    for step in steps:
        assert not set(step["loaded"]) & set(MODEL_STACK), step


def test_bird_text_evaluation_skips_scipy(tmp_path):
    """The BiRD protocol needs no box matching or mask metrics, so `medground eval` of its files stays light."""
    steps = _run_cli([["eval", str(_bird_vg_predictions(tmp_path / "test_VG_pred.jsonl"))]], tmp_path)
    assert steps[0]["code"] == 0 and "scipy" not in steps[0]["loaded"], steps


@pytest.mark.parametrize("package", [medground.icl, medground.eval])
def test_lazy_packages_resolve_every_public_name(package):
    """The names a package lists are importable from it although it loads them only on first use."""
    for name in package.__all__:
        value = getattr(package, name)
        assert value is not None and (not callable(value) or value.__name__ == name), name
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        package.nonexistent  # noqa: B018
