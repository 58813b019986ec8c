import json
import shutil

import pytest
import torch

from medground.mllm.families import get_family
from medground.mllm.train import PRESETS, Collator, TrainConfig, _prepare, apply_preset, config_from_dict

from .conftest import TINY, train_tiny


def test_training_lowers_the_loss(dataset, tmp_path):
    result = train_tiny(dataset, tmp_path / "m", "qwen2-vl", steps=30)
    first, last = result.losses[0][1], result.losses[-1][1]
    assert last < 0.5 * first
    meta = json.loads((tmp_path / "m" / "medground.json").read_text())
    assert meta["family"] == "qwen2-vl" and meta["train"]["max_steps"] == 30
    assert (tmp_path / "m" / "model.safetensors").is_file()


def test_lora_packing_and_checkpointing_train_and_save_a_plain_model(dataset, tmp_path):
    result = train_tiny(
        dataset,
        tmp_path / "m",
        "qwen3-vl",
        steps=20,
        lora=True,
        lora_r=4,
        pack=True,
        gradient_checkpointing=True,
    )
    assert result.losses[-1][1] < result.losses[0][1]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "qwen3_vl"
    assert not (tmp_path / "m" / "adapter_config.json").exists()


def test_resume_from_last_checkpoint_continues_the_interrupted_run(dataset, tmp_path):
    """A 6-step run interrupted after its step-4 checkpoint and resumed ends with the weights of the
    uninterrupted run (weights, optimizer, scheduler, data order and RNG restored)."""
    from safetensors.torch import load_file

    straight = train_tiny(dataset, tmp_path / "s", "qwen2-vl", steps=6, save_steps=2, logging_steps=1)
    # The interruption: only the step-4 checkpoint survives, and no final model.
    shutil.copytree(
        straight.out / "checkpoints" / "checkpoint-4", tmp_path / "m" / "checkpoints" / "checkpoint-4"
    )
    resumed = train_tiny(
        dataset, tmp_path / "m", "qwen2-vl", steps=6, save_steps=2, resume="last", logging_steps=1
    )
    assert (tmp_path / "m" / "checkpoints" / "checkpoint-6").is_dir()
    assert resumed.out == tmp_path / "m"
    # Steps 1-4 are logged from the checkpoint's state; 5 and 6 were run again and match.
    assert [s for s, _ in resumed.losses] == [1, 2, 3, 4, 5, 6]
    assert [v for _, v in resumed.losses] == pytest.approx([v for _, v in straight.losses], rel=1e-5)
    first = load_file(str(resumed.out / "model.safetensors"))
    second = load_file(str(straight.out / "model.safetensors"))
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert torch.allclose(tensor, second[name], atol=1e-6), name


def test_vision_tower_is_frozen_except_the_merger():
    from medground.mllm.tiny import TinyConfig, build_tiny

    model, _ = build_tiny(get_family("qwen2.5-vl"), ["a b c"], TinyConfig(**TINY))
    model = _prepare(model, TrainConfig(base="some/pretrained"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(".visual.merger." in n for n in trainable)
    assert not any(".visual.blocks." in n or ".visual.patch_embed." in n for n in trainable)
    assert any("language_model" in n for n in trainable)
    # A tiny model starts from random weights: its whole vision tower trains unless told otherwise.
    model = _prepare(model, TrainConfig(base="tiny"))
    assert all(p.requires_grad for p in model.parameters())
    model = _prepare(model, TrainConfig(base="tiny", freeze_vision=True))
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".visual.blocks." in n)


def test_bird_preset_and_unknown_options():
    cfg = apply_preset(TrainConfig(), "bird")
    assert (
        cfg.lr,
        cfg.scheduler,
        cfg.warmup,
        cfg.weight_decay,
        cfg.adam_beta2,
        cfg.epochs,
        cfg.max_pixels,
    ) == (2e-5, "cosine", 0.01, 0.1, 0.95, 2.0, 448 * 448)
    assert "bird" in PRESETS
    with pytest.raises(KeyError, match="known: bird"):
        apply_preset(TrainConfig(), "llava")
    with pytest.raises(KeyError, match="unknown training option"):
        config_from_dict({"learning_rate": 1.0})


def test_collator_pads_right_and_packs():
    import torch

    item = {
        "input_ids": [5, 6, 7],
        "labels": [-100, 6, 7],
        "mm_token_type_ids": [0, 0, 0],
        "pixel_values": torch.zeros(4, 2),
        "image_grid_thw": torch.tensor([[1, 2, 2]]),
    }
    short = dict(item, input_ids=[5], labels=[5], mm_token_type_ids=[1])
    batch = Collator(pad_id=0)([item, short])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [5, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["pixel_values"].shape == (8, 2) and batch["image_grid_thw"].shape == (2, 3)
    packed = Collator(pad_id=0, pack=True)([item, short])
    assert packed["input_ids"].tolist() == [[5, 6, 7, 5]]


def test_cpu_budget_stops_training_and_still_saves_the_model(dataset, tmp_path):
    """max_minutes is checked after every optimiser step: a budget below one step's CPU time ends the
    run after step 1 of the 50 planned, and the model reached there is saved as usual."""
    planned = train_tiny(dataset, tmp_path / "full", "qwen2-vl", steps=3, logging_steps=1)
    assert planned.steps == 3 and planned.cpu_seconds > 0
    cut = train_tiny(dataset, tmp_path / "cut", "qwen2-vl", steps=50, logging_steps=1, max_minutes=1e-9)
    assert cut.steps == 1 and [s for s, _ in cut.losses] == [1]
    assert (tmp_path / "cut" / "model.safetensors").is_file()
    meta = json.loads((tmp_path / "cut" / "medground.json").read_text())
    assert meta["train"]["max_minutes"] == 1e-9


def test_train_command_stops_at_max_minutes_and_says_what_it_spent(dataset, tmp_path):
    import typer
    from typer.testing import CliRunner

    from medground.mllm.commands import train_command

    app = typer.Typer()  # one command: typer runs it without a command name
    app.command()(train_command)
    options = ["--max-steps", "50", "--max-minutes", "1e-9", "--max-pixels", "4096", "--batch-size", "2"]
    sizes = ["--tiny-hidden", "64", "--tiny-vision-width", "32", "--threads", "1"]
    out = tmp_path / "m"
    result = CliRunner().invoke(app, ["--data", str(dataset), "--out", str(out), *options, *sizes])
    assert result.exit_code == 0, result.output
    assert f"model saved to {out}" in result.output and ", 1 steps in " in result.output
    assert json.loads((out / "medground.json").read_text())["train"]["max_minutes"] == 1e-9
