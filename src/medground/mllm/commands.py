"""Typer commands of the model layer: ``medground train``, ``medground ask``, ``medground predict``.

Thin: each parses options and calls the library. torch and transformers are imported inside the
functions so that ``medground --help`` stays fast and the data engine never imports torch.
Register with ``app.command("train")(train_command)`` etc. in ``medground.cli``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from medground.console import fail

__all__ = ["ask_command", "predict_command", "train_command"]


def _quiet() -> None:
    """Silence transformers' loading bars and warnings so that stdout is only the answer."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def train_command(
    data: Annotated[Path, typer.Option("--data", help="Data-engine output folder (records/ and images/).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the trained model.")],
    base: Annotated[
        str,
        typer.Option(
            help="'tiny' (from scratch), a local model folder or a hub id (Qwen/Qwen2.5-VL-7B-Instruct)."
        ),
    ] = "tiny",
    family: Annotated[
        str, typer.Option(help="Family of a tiny model: qwen2-vl, qwen2.5-vl, qwen3-vl.")
    ] = "qwen2-vl",
    preset: Annotated[
        str | None,
        typer.Option(
            help="Named recipe applied before explicit options: bird (lr 2e-5 cosine, warmup 0.01, wd 0.1, beta2 0.95, 2 epochs, 448 px)."
        ),
    ] = None,
    lora: Annotated[
        bool, typer.Option(help="Train LoRA adapters (merged at the end) instead of all weights.")
    ] = False,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank.")] = None,
    lora_dropout: Annotated[float | None, typer.Option(help="LoRA dropout (0: deterministic).")] = None,
    epochs: Annotated[float | None, typer.Option(help="Training epochs.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimiser steps.")] = None,
    max_minutes: Annotated[
        float | None,
        typer.Option(help="Stop after this many CPU minutes of training and save (0: no limit)."),
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Records per device per step.")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Gradient accumulation steps.")] = None,
    max_pixels: Annotated[int | None, typer.Option(help="Largest resized image area in pixels.")] = None,
    warmup: Annotated[float | None, typer.Option(help="Warmup as a fraction of all steps.")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="AdamW weight decay.")] = None,
    augment: Annotated[
        float | None,
        typer.Option(
            help="Random crops: each side moves in by up to this fraction (mentioned regions stay whole)."
        ),
    ] = None,
    shift: Annotated[
        float | None,
        typer.Option(help="Random shifts: pad each side with black by up to this fraction after the crop."),
    ] = None,
    shift_prob: Annotated[
        float | None, typer.Option(help="Share of the samples that get a random shift (default 1).")
    ] = None,
    save_steps: Annotated[
        int | None, typer.Option(help="Checkpoint every this many steps (for --resume).")
    ] = None,
    logging_steps: Annotated[int | None, typer.Option(help="Print the loss every this many steps.")] = None,
    pack: Annotated[bool, typer.Option(help="Pack each batch into one sequence.")] = False,
    gradient_checkpointing: Annotated[
        bool, typer.Option(help="Recompute activations to save memory.")
    ] = False,
    train_vision: Annotated[
        bool | None,
        typer.Option(
            "--train-vision/--freeze-vision",
            help="Train the whole vision tower, or only its merger (default: only the merger for a pretrained base, all of it for tiny).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, shuffling and tokenizer.")] = 0,
    resume: Annotated[str | None, typer.Option(help="Checkpoint folder to resume from, or 'last'.")] = None,
    tiny_hidden: Annotated[int | None, typer.Option(help="--base tiny: language model width.")] = None,
    tiny_layers: Annotated[int | None, typer.Option(help="--base tiny: decoder layers.")] = None,
    tiny_vision_width: Annotated[
        int | None, typer.Option(help="--base tiny: vision transformer width.")
    ] = None,
    tiny_vision_depth: Annotated[
        int | None, typer.Option(help="--base tiny: vision transformer blocks.")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
) -> None:
    """Instruction-tune a grounding model on data-engine records (all tasks mixed, loss on answers)."""
    _threads(threads)
    from medground.mllm.train import TrainConfig, apply_preset, train

    cfg = TrainConfig(
        data=str(data),
        out=str(out),
        base=base,
        family=family,
        lora=lora,
        pack=pack,
        gradient_checkpointing=gradient_checkpointing,
        freeze_vision=None if train_vision is None else not train_vision,
        seed=seed,
        resume=resume,
    )
    try:
        if preset:
            cfg = apply_preset(cfg, preset)
        overrides: dict[str, Any] = {
            "epochs": epochs,
            "max_steps": max_steps,
            "max_minutes": max_minutes,
            "lr": lr,
            "batch_size": batch_size,
            "grad_accum": grad_accum,
            "max_pixels": max_pixels,
            "warmup": warmup,
            "weight_decay": weight_decay,
            "augment": augment,
            "shift": shift,
            "shift_prob": shift_prob,
            "save_steps": save_steps,
            "logging_steps": logging_steps,
            "lora_r": lora_r,
            "lora_dropout": lora_dropout,
        }
        sizes = (
            ("hidden_size", tiny_hidden),
            ("num_layers", tiny_layers),
            ("vision_width", tiny_vision_width),
            ("vision_depth", tiny_vision_depth),
        )
        tiny = {k: v for k, v in sizes if v is not None}
        if tiny_hidden is not None:
            tiny["intermediate_size"] = 2 * tiny_hidden
        from dataclasses import replace

        cfg = replace(cfg, tiny=tiny, **{k: v for k, v in overrides.items() if v is not None})
        result = train(cfg)
    except (FileNotFoundError, KeyError, ValueError) as error:
        fail(str(error))
    # under accelerate/torchrun every process runs this command: the one that saved says so, once
    if int(os.environ.get("RANK", "0")) == 0:
        last = f", last loss {result.losses[-1][1]:.4f}" if result.losses else ""
        spent = f", {result.steps} steps in {result.cpu_seconds / 60:.1f} CPU min"
        typer.echo(f"model saved to {result.out}{last}{spent}")


def _parse_box(box: str | None) -> list[int] | None:
    if box is None:
        return None
    parts = box.replace(" ", "").split(",")
    if len(parts) != 4 or not all(p.lstrip("-").isdigit() for p in parts):
        fail(f"--box must be four integers x0,y0,x1,y1 in original-image pixels, got {box!r}")
    return [int(p) for p in parts]


def ask_command(
    image: Annotated[Path, typer.Argument(help="Image file (any size, gray or RGB).")],
    question: Annotated[
        str, typer.Argument(help="Question, e.g. 'Where is the liver?'; {box} marks where --box goes.")
    ],
    box: Annotated[
        str | None, typer.Option(help="Region x0,y0,x1,y1 in original-image pixels (x1/y1 exclusive).")
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="Trained model folder (default: the shipped bird-nano).")
    ] = None,
    draw: Annotated[
        Path | None,
        typer.Option(help="Write the image with the answer's boxes (and masks) drawn to this PNG."),
    ] = None,
    segment: Annotated[
        bool, typer.Option(help="Segment each answer box (box-prompted in-context segmenter).")
    ] = False,
    masks_out: Annotated[
        Path | None,
        typer.Option(help="With --segment: write each box's mask here as a PNG named by its label."),
    ] = None,
    box_model: Annotated[
        Path | None,
        typer.Option(help="With --segment: box-prompt model folder (default: the shipped one)."),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print {answer, boxes} as JSON (with --segment: masks as COCO RLE)."),
    ] = False,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer in tokens.")] = 128,
) -> None:
    """Ask a grounding model about one image; boxes (and with --segment their masks) in original-image pixels."""
    region = _parse_box(box)
    if not segment and (masks_out is not None or box_model is not None):
        fail("--masks-out and --box-model need --segment")
    _quiet()
    from medground.mllm.grounder import Grounder

    try:
        segmenter = None
        if box_model is not None:
            from medground.icl.segmenter import InContextSegmenter

            segmenter = InContextSegmenter.from_pretrained(box_path=box_model)
        grounder = Grounder.from_pretrained(model, max_new_tokens=max_new_tokens, segmenter=segmenter)
        answer = grounder.ask(image, question, box=region, segment=segment)
    except (FileNotFoundError, ValueError, KeyError) as error:
        fail(str(error))
    paths: list[Path] = []
    if masks_out is not None:
        from medground.mllm.draw import save_answer_masks

        paths = save_answer_masks(answer.boxes, masks_out)
    if as_json:
        typer.echo(json.dumps(answer.as_dict(), ensure_ascii=False))
    else:
        typer.echo(answer.text)
        for i, g in enumerate(answer.boxes):
            mask = getattr(g, "mask", None)
            area = "" if mask is None else f", mask {int(mask.sum())} px"
            where = f" -> {paths[i]}" if paths else ""
            typer.echo(f"  {g.label or '(box)'}: {g.box.as_list()}{area}{where}")
    if draw is not None:
        from medground.mllm.draw import save_answer_drawing

        save_answer_drawing(image, answer.boxes, draw, given=region)


def predict_command(
    data: Annotated[Path, typer.Option("--data", help="Data-engine output folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Predictions JSONL (one row per turn).")],
    split: Annotated[str, typer.Option(help="Record split to answer.")] = "test",
    model: Annotated[
        Path | None, typer.Option(help="Trained model folder (default: the shipped bird-nano).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N records.")] = None,
    resume: Annotated[
        bool, typer.Option(help="Keep the rows already in OUT and answer only the missing turns.")
    ] = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
) -> None:
    """Answer every turn of a split and write the evaluation harness's prediction rows."""
    _threads(threads)
    _quiet()
    from medground.mllm.grounder import Grounder, predict

    try:

        def show(done: int, total: int) -> None:
            if done == total or done % 10 == 0:
                typer.echo(f"  {done}/{total} records", err=True)

        count = predict(
            Grounder.from_pretrained(model), data, split, out, limit=limit, resume=resume, progress=show
        )
    except (FileNotFoundError, ValueError, KeyError) as error:
        fail(str(error))
    typer.echo(f"{count} predictions written to {out}")
