"""`medground train` under `accelerate launch` with 2 CPU processes (gloo): DDP and FSDP2 against one process.

Same seed, data and global batch (2 processes x 1 record vs 1 process x 2 records), fp32, no dropout:
the weights saved by the 2-process runs, reloaded, equal those of the single-process run. The accelerate
configs are the shipped ones with ``use_cpu``, 2 processes and no mixed precision. Every FSDP run (full,
LoRA, resumed) must print that all its parameters were DTensors after ``prepare``; a run that fell back to
DDP prints no such line (and ``medground train`` itself refuses to go on), so these tests fail then.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from medground.cli import app

from .conftest import make_dataset

CONFIGS = Path(__file__).parents[2] / "src" / "medground" / "mllm" / "configs"
COMMON = [
    "--max-steps", "4", "--save-steps", "2", "--logging-steps", "1", "--lr", "3e-3",
    "--tiny-hidden", "64", "--tiny-vision-width", "32", "--max-pixels", "4096", "--threads", "1",
]  # fmt: skip
LORA = ["--lora", "--lora-r", "4", "--lora-dropout", "0"]


def _cpu_config(name: str, folder: Path) -> Path:
    """The shipped accelerate config ``name`` for 2 CPU processes in fp32."""
    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    config |= {"use_cpu": True, "num_processes": 2, "mixed_precision": "no"}
    path = folder / f"cpu_{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(config: Path, data: Path, out: Path, *extra: str) -> subprocess.Popen:
    """Start ``medground train`` with ``accelerate launch`` on 2 CPU processes (each launch its own port)."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
        "--main_process_port", str(_free_port()), "-m", "medground.cli", "train",
        "--data", str(data), "--out", str(out), "--batch-size", "1", *COMMON, *extra,
    ]  # fmt: skip
    env = os.environ | {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    # Files, not pipes: a full pipe would stall a rank (and its peer) until the test reads it.
    with (
        (out.parent / f"{out.name}.out").open("w") as stdout,
        (out.parent / f"{out.name}.err").open("w") as stderr,
    ):
        return subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr, text=True)


def _stdout(run: subprocess.Popen) -> str:
    """Wait for a launch; its stdout (rank 0's printed losses and the CLI's last line)."""
    run.wait(timeout=300)
    out = Path(run.args[run.args.index("--out") + 1])
    assert run.returncode == 0, (out.parent / f"{out.name}.err").read_text()[-3000:]
    return (out.parent / f"{out.name}.out").read_text()


def _sharded(stdout: str) -> tuple[int, int, int]:
    """(sharded, total, processes) from the line a run prints once its model is prepared under FSDP2;
    a run that printed none (it was not sharded) fails here."""
    found = re.findall(
        r"^fsdp2: (\d+) of (\d+) parameter tensors sharded \(DTensor\) across (\d+) processes$", stdout, re.M
    )
    assert len(found) == 1, f"no FSDP2 sharding line in the run's output:\n{stdout[-2000:]}"
    sharded, total, processes = (int(v) for v in found[0])
    return sharded, total, processes


def _single(data: Path, out: Path, *extra: str) -> None:
    result = CliRunner().invoke(
        app, ["train", "--data", str(data), "--out", str(out), "--batch-size", "2", *COMMON, *extra]
    )
    assert result.exit_code == 0, result.output


def _losses(stdout: str) -> list[float]:
    """The loss of each logged step, from the Trainer's printed dicts."""
    rows = [ast.literal_eval(line) for line in stdout.splitlines() if line.startswith("{'loss'")]
    return [float(row["loss"]) for row in rows]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict of the model reloaded from ``folder`` as users load it."""
    from transformers import Qwen2VLForConditionalGeneration

    return Qwen2VLForConditionalGeneration.from_pretrained(folder).state_dict()


def _assert_equal(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], atol: float) -> None:
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert torch.allclose(tensor, second[name], atol=atol, rtol=0), name


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """Single-process and 2-process runs on 4 training records (2 steps per epoch, 4 steps)."""
    root = tmp_path_factory.mktemp("distributed")
    data = make_dataset(root / "data", n_images=8)
    ddp, fsdp = _cpu_config("ddp", root), _cpu_config("fsdp", root)
    _single(data, root / "single")
    _single(data, root / "single-lora", *LORA)
    _single(data, root / "init", "--lr", "0")
    # Independent launches run at the same time (3 x 2 processes, about 0.6 GB each).
    started = {
        "ddp": _launch(ddp, data, root / "ddp"),
        "fsdp": _launch(fsdp, data, root / "fsdp"),
        "fsdp-lora": _launch(fsdp, data, root / "fsdp-lora", *LORA),
    }
    outputs: dict[str, Path | str] = {"root": root} | {k: _stdout(v) for k, v in started.items()}
    # The interruption: only the step-2 checkpoint of the uninterrupted FSDP run survives.
    shutil.copytree(
        root / "fsdp" / "checkpoints" / "checkpoint-2", root / "resumed" / "checkpoints" / "checkpoint-2"
    )
    outputs["resumed"] = _stdout(_launch(fsdp, data, root / "resumed", "--resume", "last"))
    return outputs


def test_ddp_and_fsdp2_full_saves_equal_the_single_process_run(runs):
    root = runs["root"]
    # Both runs were distributed: one RNG state per rank; FSDP2 checkpoints hold sharded weights.
    for name in ("ddp", "fsdp"):
        checkpoint = root / name / "checkpoints" / "checkpoint-2"
        assert {p.name for p in checkpoint.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert (root / "fsdp" / "checkpoints" / "checkpoint-2" / "pytorch_model_fsdp_0").is_dir()
    assert not (root / "ddp" / "checkpoints" / "checkpoint-2" / "pytorch_model_fsdp_0").exists()
    # After prepare every parameter of the FSDP run was a DTensor over the 2 processes; DDP printed no such line.
    sharded, total, processes = _sharded(runs["fsdp"])
    assert sharded == total > 0 and processes == 2
    assert "fsdp2:" not in runs["ddp"]
    single = _weights(root / "single")
    assert not torch.equal(single["lm_head.weight"], _weights(root / "init")["lm_head.weight"])
    _assert_equal(_weights(root / "ddp"), single, atol=1e-5)
    _assert_equal(_weights(root / "fsdp"), single, atol=1e-5)
    # The same losses were printed, step by step (rank 0 only).
    assert len(_losses(runs["ddp"])) == 4
    assert _losses(runs["ddp"]) == _losses(runs["fsdp"])


def test_fsdp2_lora_merged_save_equals_the_single_process_run(runs):
    root = runs["root"]
    assert not (root / "fsdp-lora" / "adapter_config.json").exists()
    # Sharded, not a silent DDP fallback: every parameter (adapters and frozen base) a DTensor after prepare;
    # LoRA adds two matrices per adapted projection to the full run's tensors.
    sharded, total, processes = _sharded(runs["fsdp-lora"])
    assert sharded == total > _sharded(runs["fsdp"])[1] and processes == 2
    merged, single, init = (_weights(root / n) for n in ("fsdp-lora", "single-lora", "init"))
    _assert_equal(merged, single, atol=1e-5)
    # LoRA moved the adapted projections and nothing else.
    adapted = [n for n in init if n.endswith(("q_proj.weight", "down_proj.weight")) and "language_model" in n]
    assert adapted and all(not torch.allclose(merged[n], init[n], atol=1e-6) for n in adapted)
    assert torch.equal(
        merged["model.language_model.embed_tokens.weight"], init["model.language_model.embed_tokens.weight"]
    )
    assert (
        merged["lm_head.weight"].data_ptr() == merged["model.language_model.embed_tokens.weight"].data_ptr()
    )


def test_resume_last_across_processes_continues_the_interrupted_run(runs):
    root = runs["root"]
    # The resumed run was sharded too (same tensors as the uninterrupted one).
    assert _sharded(runs["resumed"]) == _sharded(runs["fsdp"])
    _assert_equal(_weights(root / "resumed"), _weights(root / "fsdp"), atol=1e-6)
    # Steps 1-2 came from the checkpoint: only steps 3 and 4 were run again, with the same losses.
    assert _losses(runs["resumed"]) == _losses(runs["fsdp"])[2:]


@pytest.mark.parametrize("name", ["ddp", "fsdp", "zero2", "zero3"])
def test_shipped_launch_configs_parse_and_zero3_gathers_16bit_weights_on_save(name):
    """accelerate's own loader reads each config; the DeepSpeed ones become the DeepSpeed JSON that accelerate
    would hand to DeepSpeed (built by accelerate's DeepSpeedPlugin, which does not need deepspeed, not
    installed here: a config-level check, not a ZeRO run)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin, DistributedType

    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    expected = {"ddp": DistributedType.MULTI_GPU, "fsdp": DistributedType.FSDP}.get(
        name, DistributedType.DEEPSPEED
    )
    assert config.distributed_type == expected and config.mixed_precision == "bf16"
    if name == "fsdp":
        assert config.fsdp_config["fsdp_version"] == 2
    if not name.startswith("zero"):
        return
    zero = DeepSpeedPlugin(**config.deepspeed_config).deepspeed_config["zero_optimization"]
    assert zero["stage"] == int(name[-1])
    assert zero.get("stage3_gather_16bit_weights_on_model_save", False) is (name == "zero3")


def test_plain_model_takes_a_gathered_state_and_names_what_is_missing():
    """A gather may keep a tied matrix once (ZeRO-3 consolidates parameters, not names): the copy ties it
    again; a state without some weight is refused, naming it, instead of saving random values."""
    from medground.mllm.families import get_family
    from medground.mllm.tiny import TinyConfig, build_tiny
    from medground.mllm.train import plain_model

    family = get_family("qwen2-vl")
    model, _ = build_tiny(
        family, ["liver spleen"], TinyConfig(hidden_size=64, intermediate_size=128, vision_width=32)
    )
    state = {k: v.clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    copy = plain_model(family, model.config, state)
    assert copy.lm_head.weight is copy.model.language_model.embed_tokens.weight
    assert torch.equal(copy.lm_head.weight, model.lm_head.weight)
    del state["model.language_model.layers.0.mlp.up_proj.weight"]
    with pytest.raises(RuntimeError, match=r"missing \['model.language_model.layers.0.mlp.up_proj.weight'\]"):
        plain_model(family, model.config, state)


def test_unsharded_model_under_an_fsdp_request_fails_loudly():
    """The check every FSDP-launched run makes after prepare: a model whose parameters are plain tensors (what
    a silent fall-back to DDP trains) is refused, naming the count; an empty model too."""
    from medground.mllm.train import check_sharded

    with pytest.raises(RuntimeError, match=r"FSDP was asked .* 2 of 2 parameter tensors are not sharded"):
        check_sharded(torch.nn.Linear(3, 2), world_size=2)
    with pytest.raises(RuntimeError, match=r"0 of 0 parameter tensors"):
        check_sharded(torch.nn.Identity(), world_size=2)
