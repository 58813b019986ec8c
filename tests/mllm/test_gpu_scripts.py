"""The GPU scripts run here in their CPU modes: bench/gpu_check.py --tiny, bench/gpu_train.sh --dry-run."""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import torch
import typer

from medground.cli import app

BENCH = Path(__file__).parents[2] / "bench"


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_tiny_runs_on_cpu_with_every_row(tmp_path):
    torch.set_num_threads(1)
    results = _gpu_check().main(
        ["--tiny", "--steps", "2", "--warmup", "1", "--out", str(tmp_path / "r.json")]
    )
    rows = results["rows"]
    kinds = [(r["tuning"], r["trainer"], r["packing"]) for r in rows]
    assert kinds == [
        (t, n, p) for t in ("full", "lora") for n, p in (("hf", False), ("ours", False), ("ours", True))
    ]
    for row in rows:
        assert row["tokens_per_s"] > 0 and row["mfu"] is None  # no MFU without a GPU peak
        assert row["vs_hf"] == pytest.approx(1.0) if row["trainer"] == "hf" else row["vs_hf"] > 0
    # Same records in the timed step for every row: padding is not counted, packing removes only padding.
    assert len({r["tokens"] for r in rows}) == 1
    gen = results["generation"]
    assert gen["new_tokens"] == 4 * gen["batch"] and gen["tokens_per_s"] > 0
    assert (tmp_path / "r.json").is_file()


def test_the_3b_shape_has_the_published_parameter_count():
    """Qwen2.5-VL-3B-Instruct: 3,754,622,976 parameters (its model card's 3.75B; built on meta, no memory)."""
    from medground.mllm.tiny import train_tokenizer

    gpu_check = _gpu_check()
    model = gpu_check.build_model(
        gpu_check.QWEN25_VL_3B, train_tokenizer(["a b"], 300), "meta", torch.bfloat16
    )
    assert sum(p.numel() for p in model.parameters()) == 3_754_622_976


def test_gpu_train_dry_run_prints_commands_the_cli_accepts(tmp_path):
    env = os.environ | {"MEDSEG": str(tmp_path / "medseg")}
    done = subprocess.run(
        ["bash", str(BENCH / "gpu_train.sh"), "--dry-run", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, cwd=BENCH.parent, check=True,
    )  # fmt: skip
    commands = [shlex.split(line[2:]) for line in done.stdout.splitlines() if line.startswith("+ ")]
    group = typer.main.get_command(app)
    seen = []
    for words in commands:
        if words[0].endswith("medground"):
            name, args = words[1], words[2:]
            command = group.commands[name]
            command.make_context(name, args)  # raises on an unknown option or a bad value
            seen.append(name)
        else:
            assert words[1] == "-c"
            compile(words[2], "gpu_train.sh", "exec")
    assert seen == ["icl-train", "icl-eval", "build", "train", "eval"]
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
