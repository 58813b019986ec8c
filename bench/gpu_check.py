"""GPU check: our trainer against plain HF Trainer on a Qwen2.5-VL-3B-shaped model, in one run.

    python bench/gpu_check.py            # one H100/H200: about 3-4 minutes (3B shape, bf16, SDPA)
    python bench/gpu_check.py --tiny     # any CPU: a tiny shape, a few steps, seconds (a smoke test)

The model is built from the public Qwen2.5-VL-3B-Instruct config values written below (random weights;
nothing is downloaded); its tokenizer is a byte-level BPE trained on the synthetic records, whose ids all
fall inside the 3B vocabulary. Records: synthetic data-engine records (bright boxes on dark 448 x 448
images, 1-6 grounding turns each, so batches carry real padding).

Rows: full fine-tuning and LoRA (r 16), each with plain ``transformers.Trainer`` (default arguments,
padding collator) and with our trainer (:func:`medground.mllm.train.build_trainer`), packing off and on;
both in bf16 with SDPA attention, the same model init, records, batch and steps. Reported per row:
non-padding tokens/s (timed after warm-up steps), peak GPU memory, MFU (6 N tokens/s / peak bf16 FLOP/s
for full fine-tuning, 4 N for LoRA, where no weight gradients are computed; N = language-model matmul
parameters with lm_head; attention scores and the vision tower are left out, so MFU is understated), and
the ratio to plain HF Trainer. Then batch generation throughput (new tokens/s, greedy, fixed length),
and, with several GPUs, a short ``accelerate launch`` run of ``medground train`` under DDP and FSDP2.
Our trainer is the HF Trainer with our settings plus naive packing (no fused kernels by default): its
speed-up over plain HF Trainer can only come from packing removing padding. ``--liger`` adds a row with
Liger's fused kernels patched into the model (transformers' own hook; liger-kernel is not installed on
the CPU machine where this script was written, so that row has never run).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from medground.grounding import get_dialect
from medground.mllm.data import encode_prompt, read_records, record_texts
from medground.mllm.families import get_family
from medground.mllm.processor import build_processor
from medground.mllm.tiny import train_tokenizer, vision_token_ids
from medground.mllm.train import TrainConfig, build_trainer
from medground.types import Box

QWEN25_VL_3B: dict[str, Any] = {
    "text": {
        "vocab_size": 151936,
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    },
    "vision": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 2048,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
    },
}
"""Qwen/Qwen2.5-VL-3B-Instruct config.json (tie_word_embeddings true), token ids excepted."""

TINY: dict[str, Any] = {
    "text": {
        "vocab_size": 1024,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
    },
    "vision": {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [1],
    },
}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12, "L40S": 362e12}
"""Dense bf16 tensor-core FLOP/s by GPU name (vendor data sheets, no sparsity)."""
NAMES = ("liver", "spleen", "left kidney", "right kidney", "heart", "left lung", "right lung", "aorta")


def make_records(root: Path, n: int, size: int, seed: int = 0) -> Path:
    """``n`` synthetic data-engine records (split train) with images under ``root``: 1-6 REC turns each."""
    rng = np.random.default_rng(seed)
    tag = get_dialect("qwen-vl-grid")
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "records").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        pixels = np.zeros((size, size), np.uint8)
        convs, turns, regions = [], [], []
        for j in range(int(rng.integers(1, 7))):
            x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
            w, h = (int(v) for v in rng.integers(8, size // 2, 2))
            box = Box(x0, y0, x0 + w, y0 + h)
            name = NAMES[j % len(NAMES)]
            pixels[box.y0 : box.y1, box.x0 : box.x1] = 60 + 25 * j
            regions.append({"name": name, "key": name, "box": box.as_list(), "instance": 0, "area": box.area})
            prefix = "<image>\n" if j == 0 else ""
            convs += [
                {"from": "human", "value": f"{prefix}Where is the {name}?"},
                {"from": "gpt", "value": f"The {tag.ground(name, [box], size, size)} is here."},
            ]
            turns.append({"task": "rec", "structure": name, "regions": [j], "negative": False})
        Image.fromarray(pixels).save(root / "images" / f"img{i}.png")
        lines.append(
            {
                "id": f"syn/img{i}#0",
                "image": f"images/img{i}.png",
                "width": size,
                "height": size,
                "split": "train",
                "dialect": "qwen-vl-grid",
                "conversations": convs,
                "turns": turns,
                "regions": regions,
            }
        )
    with (root / "records" / "shard-00000.jsonl").open("w") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in lines)
    return root


def build_model(shape: dict[str, Any], tokenizer: Any, device: str, dtype: torch.dtype) -> Any:
    """A randomly initialised Qwen2.5-VL model of ``shape`` (SDPA attention) whose special ids follow ``tokenizer``."""
    family = get_family("qwen2.5-vl")
    ids = vision_token_ids(tokenizer)
    text = shape["text"] | {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    config = family.config_cls()(
        text_config=text, vision_config=shape["vision"], tie_word_embeddings=True, **ids
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = family.model_cls()._from_config(config, attn_implementation="sdpa", dtype=dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def matmul_params(model: Any) -> int:
    """Parameters of the language model's matrix multiplies (decoder layers and lm_head, not embeddings)."""
    lm = model.model.language_model
    return sum(p.numel() for n, p in lm.named_parameters() if "layers" in n) + model.lm_head.weight.numel()


class CountingCollator:
    """Wraps a collator and records the non-padding tokens of every batch it makes, in order."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.tokens = inner, []

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.inner(items)
        self.tokens.append(int(batch["attention_mask"].sum()))
        return batch


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_training(trainer: Any, steps: int, warmup: int, device: str) -> dict[str, float]:
    """Train ``steps`` steps; tokens/s over steps ``warmup+1..steps`` (batches are made in step order)."""
    from transformers import TrainerCallback

    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    marks: dict[int, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step in (warmup, steps):
                _sync(device)
                marks[state.global_step] = time.perf_counter()

    trainer.add_callback(Clock())
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    seconds = marks[steps] - marks[warmup]
    tokens = sum(counter.tokens[warmup:steps])
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "tokens": tokens, "peak_gib": peak}


def plain_hf_trainer(ours: Any, cfg: TrainConfig) -> Any:
    """A plain ``transformers.Trainer`` (default arguments but the run's size) on the same model and data."""
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(Path(cfg.out) / "hf"),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lr,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=torch.cuda.is_available(),
        remove_unused_columns=False,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=cfg.max_steps,
    )
    collator = replace(ours.data_collator, pack=False)
    return Trainer(model=ours.model, args=args, train_dataset=ours.train_dataset, data_collator=collator)


def generation(model: Any, processor: Any, records: list[dict], data: Path, batch: int, new: int) -> dict:
    """Greedy batch generation of ``new`` tokens for ``batch`` prompts (left-padded): new tokens/s."""
    prompts = [
        encode_prompt(
            processor, Image.open(data / r["image"]), r["conversations"][0]["value"].split("\n")[-1]
        )
        for r in records[:batch]
    ]
    width = max(p["input_ids"].shape[1] for p in prompts)
    pad = processor.tokenizer.pad_token_id

    def left(key: str, fill: int) -> torch.Tensor:
        rows = [torch.nn.functional.pad(p[key][0], (width - p[key].shape[1], 0), value=fill) for p in prompts]
        return torch.stack(rows)

    device = model.device
    inputs = {
        "input_ids": left("input_ids", pad),
        "attention_mask": left("attention_mask", 0),
        "mm_token_type_ids": left("mm_token_type_ids", 0),
        "pixel_values": torch.cat([p["pixel_values"] for p in prompts]).to(model.dtype),
        "image_grid_thw": torch.cat([p["image_grid_thw"] for p in prompts]),
    }
    inputs = {k: v.to(device) for k, v in inputs.items()}
    model.eval()
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=2, min_new_tokens=2, do_sample=False)  # warm-up
        _sync(device.type)
        start = time.perf_counter()
        out = model.generate(**inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        _sync(device.type)
    seconds = time.perf_counter() - start
    made = (out.shape[1] - width) * batch
    return {"batch": batch, "new_tokens": made, "seconds": seconds, "tokens_per_s": made / seconds}


def multi_gpu(data: Path, work: Path, gpus: int, steps: int) -> list[dict[str, Any]]:
    """``medground train`` (tiny base, widened) under ``accelerate launch`` on all GPUs: DDP, then FSDP2."""
    import yaml

    rows = []
    configs = Path(__file__).parents[1] / "src" / "medground" / "mllm" / "configs"
    for name in ("ddp", "fsdp"):
        config = yaml.safe_load((configs / f"{name}.yaml").read_text()) | {"num_processes": gpus}
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        command = [
            sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(path),
            "-m", "medground.cli", "train", "--data", str(data), "--out", str(work / f"multi-{name}"),
            "--family", "qwen2.5-vl", "--max-steps", str(steps), "--batch-size", "4",
            "--tiny-hidden", "1024", "--tiny-layers", "8", "--tiny-vision-width", "256",
        ]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=240)
        rows.append(
            {
                "launch": name,
                "gpus": gpus,
                "returncode": done.returncode,
                "seconds": time.perf_counter() - start,
                "saved": (work / f"multi-{name}" / "model.safetensors").is_file(),
                "stderr_tail": done.stderr[-400:] if done.returncode else "",
            }
        )
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shape on CPU, a few steps (smoke test)")
    parser.add_argument("--steps", type=int, help="optimiser steps per row (default 30; --tiny 3)")
    parser.add_argument("--warmup", type=int, help="untimed first steps (default 5; --tiny 1)")
    parser.add_argument("--batch-size", type=int, help="records per step (default 8; --tiny 2)")
    parser.add_argument(
        "--liger",
        action="store_true",
        help="also a row 'ours + Liger kernels, packing on' (needs pip install liger-kernel; untested here)",
    )
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    tiny = args.tiny
    device = "cpu" if tiny or not torch.cuda.is_available() else "cuda"
    if not tiny and device != "cuda":
        parser.error("no GPU visible: the 3B shape needs one (use --tiny for a CPU smoke test)")
    steps = args.steps or (3 if tiny else 30)
    warmup = args.warmup if args.warmup is not None else (1 if tiny else 5)
    batch = args.batch_size or (2 if tiny else 8)
    if not 1 <= warmup < steps:
        parser.error(f"--warmup must be at least 1 and below --steps ({steps}), got {warmup}")
    shape, size = (TINY, 112) if tiny else (QWEN25_VL_3B, 448)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in gpu), None)
    family = get_family("qwen2.5-vl")
    results: dict[str, Any] = {"device": gpu, "shape": "tiny" if tiny else "Qwen2.5-VL-3B", "steps": steps}
    results |= {"warmup": warmup, "batch_size": batch, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = make_records(work / "data", n=max(steps * batch + 8, 16), size=size)
        records = read_records(data, "train")
        cfg = TrainConfig(
            data=str(data), base="qwen2.5-vl-3b-shape", out=str(work / "run"), family=family.name,
            max_steps=steps, batch_size=batch, lr=1e-5, warmup=0.0, save_steps=10**9, logging_steps=steps,
            min_pixels=size * size, max_pixels=size * size, lora_r=16, lora_dropout=0.0,
        )  # fmt: skip
        tokenizer = train_tokenizer(record_texts(records, family.dialect(cfg.min_pixels, cfg.max_pixels)))
        processor = build_processor(family, tokenizer, cfg.min_pixels, cfg.max_pixels)
        for lora in (False, True):
            variants = [("hf", False), ("ours", False), ("ours", True)] + [("ours+liger", True)] * args.liger
            for trainer_name, pack in variants:
                model = build_model(shape, tokenizer, device, dtype)
                if trainer_name == "ours+liger":
                    from transformers.integrations.liger import apply_liger_kernel

                    apply_liger_kernel(model, None)  # what TrainingArguments(use_liger_kernel=True) does
                n_matmul = matmul_params(model)
                run_cfg = replace(cfg, lora=lora, pack=pack)
                trainer = build_trainer(run_cfg, model, processor, family, records)
                if trainer_name == "hf":
                    trainer = plain_hf_trainer(trainer, run_cfg)
                row = {"tuning": "lora" if lora else "full", "trainer": trainer_name, "packing": pack}
                row |= time_training(trainer, steps, warmup, device)
                flops = (4 if lora else 6) * n_matmul * row["tokens_per_s"]
                row["mfu"] = flops / peak if peak and device == "cuda" else None
                results["rows"].append(row)
                print(json.dumps(row), flush=True)
                del trainer, model
                gc.collect()
                if device == "cuda":
                    torch.cuda.empty_cache()
        for row in results["rows"]:
            base = next(r for r in results["rows"] if r["tuning"] == row["tuning"] and r["trainer"] == "hf")
            row["vs_hf"] = row["tokens_per_s"] / base["tokens_per_s"]
        model = build_model(shape, tokenizer, device, dtype)
        results["generation"] = generation(
            model, processor, records, data, batch=min(16, len(records)), new=4 if tiny else 64
        )
        print(json.dumps({"generation": results["generation"]}), flush=True)
        del model
        gpus = torch.cuda.device_count() if device == "cuda" else 0
        if gpus > 1:
            results["multi_gpu"] = multi_gpu(data, work, gpus, steps=20)
    print(f"{'tuning':6} {'trainer':10} {'pack':5} {'tok/s':>10} {'vs HF':>6} {'peak GiB':>9} {'MFU':>6}")
    for r in results["rows"]:
        mfu = f"{r['mfu']:.3f}" if r["mfu"] is not None else "-"
        print(
            f"{r['tuning']:6} {r['trainer']:10} {r['packing']!s:5} {r['tokens_per_s']:10.1f} "
            f"{r['vs_hf']:6.2f} {r['peak_gib']:9.1f} {mfu:>6}"
        )
    gen = results["generation"]
    print(f"generation: batch {gen['batch']}, {gen['tokens_per_s']:.1f} new tokens/s")
    for row in results.get("multi_gpu", []):
        print(f"multi-GPU {row['launch']} x{row['gpus']}: rc {row['returncode']}, {row['seconds']:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
