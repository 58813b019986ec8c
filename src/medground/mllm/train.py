"""Multi-task instruction tuning on data-engine records with the HF Trainer (full or LoRA).

All tasks of a record are one multi-turn conversation; the loss falls on assistant tokens only.
The vision tower is frozen except its merger by default. Multi-GPU / multi-node: launch the same
command with ``accelerate launch --config_file src/medground/mllm/configs/<ddp|fsdp|zero2|zero3>.yaml``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from medground.mllm.data import (
    IGNORE_INDEX,
    encode_record,
    random_crop,
    random_pad,
    read_records,
    record_texts,
)
from medground.mllm.families import Family, family_for_model_type, get_family
from medground.mllm.processor import build_processor, load_processor
from medground.mllm.tiny import TinyConfig, build_tiny
from medground.types import Box

__all__ = [
    "META_FILE",
    "PRESETS",
    "Collator",
    "RecordDataset",
    "TrainConfig",
    "TrainResult",
    "apply_preset",
    "build_trainer",
    "check_sharded",
    "config_from_dict",
    "load_base",
    "plain_model",
    "save_model",
    "train",
]

log = logging.getLogger(__name__)
META_FILE = "medground.json"


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; saved into ``out/medground.json``."""

    data: str = ""
    """Data-engine output directory (holds records/ and images/)."""
    base: str = "tiny"
    """"tiny" (from scratch), a local model directory or a hub id such as Qwen/Qwen2.5-VL-7B-Instruct."""
    out: str = "runs/mllm/model"
    """Output directory of the trained model."""
    family: str = "qwen2-vl"
    """Family of a tiny model (ignored for a real base: its config says)."""
    split: str = "train"
    """Record split to train on."""
    lora: bool = False
    """Train LoRA adapters (merged into the weights at the end) instead of full fine-tuning."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator."""
    lora_dropout: float = 0.05
    """LoRA dropout."""
    freeze_vision: bool | None = None
    """Freeze the vision tower except its merger (None: yes for a pretrained base, no for tiny)."""
    epochs: float = 3.0
    """Training epochs."""
    max_steps: int = -1
    """Stop after this many optimiser steps (-1: run all epochs)."""
    max_minutes: float = 0.0
    """Stop after this many CPU minutes of training (the process's CPU time, all threads; 0: no limit).

    The model reached at that step is saved as usual; the learning-rate schedule still spans
    ``max_steps``/``epochs``, so set those to what the budget allows for a finished schedule.
    """
    lr: float = 1e-4
    """Peak learning rate."""
    scheduler: str = "cosine"
    """Learning-rate schedule (a transformers scheduler name)."""
    warmup: float = 0.03
    """Warmup as a fraction of all steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_beta2: float = 0.999
    """AdamW beta2."""
    batch_size: int = 4
    """Records per device per step."""
    grad_accum: int = 1
    """Gradient accumulation steps."""
    min_pixels: int = 56 * 56
    """Smallest resized image area in pixels."""
    max_pixels: int = 448 * 448
    """Largest resized image area in pixels (448 x 448 as in BiRD)."""
    max_length: int = 2048
    """Token budget of one record (later turns are dropped)."""
    augment: float = 0.0
    """Random crops: each side moves in by up to this fraction of the image (mentioned regions stay whole)."""
    shift: float = 0.0
    """Random shifts: after the crop, pad each side with black by up to this fraction of its size (0: off)."""
    shift_prob: float = 1.0
    """Share of the samples that get a shift (the others keep the crop only, framed as at inference)."""
    pack: bool = False
    """Pack each batch into one sequence (naive packing, no padding)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    seed: int = 0
    """Seed of initialisation, shuffling and the tokenizer's data order."""
    logging_steps: int = 10
    """Log the loss every this many steps."""
    save_steps: int = 500
    """Checkpoint every this many steps (under out/checkpoints)."""
    resume: str | None = None
    """Resume from a checkpoint directory, or "last" for the newest under out/checkpoints."""
    tiny: dict[str, Any] = field(default_factory=dict)
    """Overrides of :class:`TinyConfig` fields for --base tiny."""
    preset: str | None = None
    """Name of the preset applied (recorded only)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.shift_prob <= 1.0:
            raise ValueError(f"shift_prob must be in [0, 1], got {self.shift_prob}")


PRESETS: dict[str, dict[str, Any]] = {
    "bird": {
        "lr": 2e-5,
        "scheduler": "cosine",
        "warmup": 0.01,
        "weight_decay": 0.1,
        "adam_beta2": 0.95,
        "epochs": 2.0,
        "max_pixels": 448 * 448,
    },
}
"""Named recipes. ``bird``: BiRD's fine-tuning of Qwen-VL-Chat on Med-GRIT-270k."""


def apply_preset(cfg: TrainConfig, name: str) -> TrainConfig:
    """``cfg`` with the preset's values (apply explicit user options afterwards)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return replace(cfg, preset=name, **PRESETS[name])


class RecordDataset(torch.utils.data.Dataset):
    """Item i -> :func:`encode_record` of record i: cached, or freshly cropped/shifted on every access with ``augment``/``shift``."""

    def __init__(
        self, records: list[dict[str, Any]], processor: Any, family: Family, data_dir: str, cfg: TrainConfig
    ) -> None:
        self.records, self.processor, self.data_dir, self.cfg = records, processor, data_dir, cfg
        self.dialect = family.dialect(cfg.min_pixels, cfg.max_pixels)
        self._cache: dict[int, dict[str, Any]] = {}
        self._rng = random.Random(cfg.seed)

    def __len__(self) -> int:
        return len(self.records)

    def frame(self, record: dict[str, Any]) -> tuple[Box | None, tuple[int, int, int, int] | None]:
        """A fresh (crop, pad) for one access of ``record``: a random crop with ``augment``, then a black
        border with ``shift`` on a ``shift_prob`` share of the accesses (None: not applied)."""
        crop = random_crop(record, self._rng, self.cfg.augment) if self.cfg.augment > 0 else None
        if self.cfg.shift <= 0 or (self.cfg.shift_prob < 1 and self._rng.random() >= self.cfg.shift_prob):
            return crop, None
        w, h = (
            (crop.width, crop.height) if crop is not None else (int(record["width"]), int(record["height"]))
        )
        return crop, random_pad(w, h, self._rng, self.cfg.shift)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        if self.cfg.augment > 0 or self.cfg.shift > 0:
            crop, pad = self.frame(record)
            return encode_record(
                record, self.processor, self.dialect, self.data_dir, self.cfg.max_length, crop, pad
            )
        if index not in self._cache:
            self._cache[index] = encode_record(
                record, self.processor, self.dialect, self.data_dir, self.cfg.max_length
            )
        return self._cache[index]


@dataclass(frozen=True)
class Collator:
    """Pad a list of encoded records to (B, L) tensors (right padding), or pack them into (1, sum L)."""

    pad_id: int
    pack: bool = False

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [items] if self.pack else [[item] for item in items]
        width = max(sum(len(i["input_ids"]) for i in row) for row in rows)
        batch: dict[str, list[list[int]]] = {
            "input_ids": [],
            "labels": [],
            "mm_token_type_ids": [],
            "attention_mask": [],
        }
        for row in rows:
            ids = [t for i in row for t in i["input_ids"]]
            pad = width - len(ids)
            batch["input_ids"].append(ids + [self.pad_id] * pad)
            batch["labels"].append([t for i in row for t in i["labels"]] + [IGNORE_INDEX] * pad)
            batch["mm_token_type_ids"].append([t for i in row for t in i["mm_token_type_ids"]] + [0] * pad)
            batch["attention_mask"].append([1] * len(ids) + [0] * pad)
        out = {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
        out["pixel_values"] = torch.cat([i["pixel_values"] for i in items], dim=0)
        out["image_grid_thw"] = torch.cat([i["image_grid_thw"] for i in items], dim=0)
        return out


def _dtype() -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def load_base(cfg: TrainConfig, records: list[dict[str, Any]]) -> tuple[Any, Any, Family]:
    """(model, processor, family) for ``cfg.base``: a fresh tiny model or pretrained weights."""
    if cfg.base == "tiny":
        family = get_family(cfg.family)
        texts = record_texts(records, family.dialect(cfg.min_pixels, cfg.max_pixels))
        model, tokenizer = build_tiny(family, texts, TinyConfig(**cfg.tiny), seed=cfg.seed)
        return model, build_processor(family, tokenizer, cfg.min_pixels, cfg.max_pixels), family
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(cfg.base)
    family = family_for_model_type(config.model_type)
    model = family.model_cls().from_pretrained(cfg.base, dtype=_dtype(), use_safetensors=True)
    processor = load_processor(cfg.base)
    processor.image_processor.size = {"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels}
    return model, processor, family


def _prepare(model: Any, cfg: TrainConfig) -> Any:
    """Freeze the vision tower (merger excepted) and wrap LoRA adapters when asked."""
    freeze = cfg.freeze_vision if cfg.freeze_vision is not None else cfg.base != "tiny"
    for name, param in model.named_parameters():
        parts = name.split(".")
        param.requires_grad_(not (freeze and "visual" in parts and not any("merger" in p for p in parts)))
    if not cfg.lora:
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        task_type="CAUSAL_LM",
        target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
        modules_to_save=["merger"] if freeze else None,
    )
    return get_peft_model(model, lora)


@dataclass(frozen=True)
class TrainResult:
    """Where the model went, the logged training losses (step, loss), the optimiser steps reached and
    the CPU seconds (process time, all threads) that ``Trainer.train`` took."""

    out: Path
    losses: list[tuple[int, float]]
    steps: int = 0
    cpu_seconds: float = 0.0


def _cpu_budget_callback(minutes: float) -> Any:
    """A Trainer callback that ends training once the process has spent ``minutes`` CPU minutes since
    training began (checked after every optimiser step), so runs of different sizes get equal compute."""
    from transformers import TrainerCallback

    class CpuBudget(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.process_time()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if time.process_time() - self.start >= 60 * minutes:
                control.should_training_stop = True

    return CpuBudget()


def _training_args(cfg: TrainConfig) -> Any:
    from transformers import TrainingArguments

    names = TrainingArguments.__dataclass_fields__
    checkpointing = (
        "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    )
    return TrainingArguments(
        **{checkpointing: cfg.gradient_checkpointing},
        dataloader_pin_memory=torch.cuda.is_available(),
        output_dir=str(Path(cfg.out) / "checkpoints"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.scheduler,
        warmup_steps=cfg.warmup,
        weight_decay=cfg.weight_decay,
        adam_beta2=cfg.adam_beta2,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        bf16=torch.cuda.is_available(),
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=2,
        seed=cfg.seed,
        data_seed=cfg.seed,
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        label_names=["labels"],
    )


def plain_model(family: Family, config: Any, state: dict[str, torch.Tensor], lora: Any = None) -> Any:
    """An ordinary (unsharded, unwrapped) ``family`` model holding ``state``, the gathered full weights.

    The live model may hold FSDP shards (DTensors) or empty ZeRO-3 placeholders, and FSDP2 changes its
    class, so saving goes through a copy: built on the meta device (no memory, no init), it takes
    ``state``'s tensors as they are (``assign``). With ``lora`` (the PEFT config of the run), ``state``
    holds base and adapter weights and PEFT merges W + B @ A * alpha / r on the whole matrices.
    """
    with torch.device("meta"):
        shell = family.model_cls()(copy.deepcopy(config))
        if lora is not None:
            from peft import get_peft_model

            shell = get_peft_model(shell, lora)
    unexpected = shell.load_state_dict(state, strict=False, assign=True).unexpected_keys
    # assign leaves tied matrices (input/output embeddings) as two tensors, or one missing where the
    # gather kept a shared parameter once (ZeRO-3): tie them again before merging, else PEFT sees them
    # untied and rewrites tie_word_embeddings in the config.
    shell.tie_weights()
    empty = [name for name, p in shell.named_parameters() if p.is_meta]
    if empty or unexpected:
        raise RuntimeError(
            f"gathered weights do not fit the model: missing {empty[:5]}, unexpected {unexpected[:5]}"
        )
    return shell.merge_and_unload() if lora is not None else shell


def save_model(model: Any, processor: Any, family: Family, cfg: TrainConfig, out: Path) -> None:
    """Write safetensors weights, config, processor and ``medground.json`` into ``out``.

    The saved model is for inference, so its config and generation config ask for the KV cache: the
    HF Trainer turns ``use_cache`` off for training (``TrainingArguments.use_cache``), and a model
    saved that way would recompute the whole sequence for every new token in anyone's ``generate``.
    """
    out.mkdir(parents=True, exist_ok=True)
    model.config.use_cache = True
    model.generation_config.use_cache = True
    model.save_pretrained(out)
    processor.save_pretrained(out)
    meta = {
        "format": 1,
        "family": family.name,
        "dialect": family.box_dialect,
        "min_pixels": cfg.min_pixels,
        "max_pixels": cfg.max_pixels,
        "train": asdict(cfg),
    }
    tmp = out / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / META_FILE)


def _fsdp_asked() -> bool:
    """Whether ``accelerate launch`` was given an FSDP config (it sets ``ACCELERATE_USE_FSDP``)."""
    import os

    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def check_sharded(model: Any, world_size: int) -> str:
    """The line a run prints once its model is prepared under FSDP2; raises when a parameter is not a
    DTensor (FSDP2 ``fully_shard``): the run would silently train unsharded (e.g. DDP) though FSDP was asked."""
    from torch.distributed.tensor import DTensor

    params = list(model.parameters())
    sharded, total = sum(isinstance(p, DTensor) for p in params), len(params)
    if total == 0 or sharded != total:
        raise RuntimeError(
            f"FSDP was asked (ACCELERATE_USE_FSDP) but {total - sharded} of {total} parameter tensors are not "
            f"sharded after prepare ({type(model).__name__}); the run would train without FSDP. Check the "
            "accelerate config (distributed_type: FSDP, fsdp_version: 2) and the accelerate version"
        )
    return f"fsdp2: {sharded} of {total} parameter tensors sharded (DTensor) across {world_size} processes"


def _shard_check_callback() -> Any:
    """A Trainer callback that runs :func:`check_sharded` on the prepared model at the first step it trains
    (the Trainer prepares the model after ``on_train_begin``) and prints its line on the main process."""
    import torch.distributed as dist
    from transformers import TrainerCallback

    class ShardCheck(TrainerCallback):
        checked = False

        def on_step_begin(
            self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
        ) -> None:
            if self.checked:
                return
            self.checked = True
            line = check_sharded(model, dist.get_world_size() if dist.is_initialized() else 1)
            if state.is_world_process_zero:
                print(line, flush=True)

    return ShardCheck()


def _fsdp_on_cpu_processes(trainer: Any) -> None:
    """Turn on FSDP2 for ``accelerate launch`` with an FSDP config and ``use_cpu`` (CPU processes, gloo).

    accelerate (1.16, the pinned range) switches its state to FSDP only for accelerator device types (MULTI_GPU, ...); on
    CPU processes it leaves MULTI_CPU, and the Trainer would silently train with DDP while the user
    asked for sharding. FSDP2 (``fully_shard``) itself runs on CPU with gloo, so the state is switched
    here with the plugin the launcher described (``FSDP_*`` environment). FSDP1 refuses CPU-only runs.
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    if not _fsdp_asked() or state.distributed_type != DistributedType.MULTI_CPU:
        return
    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise ValueError(
            f"FSDP on CPU processes needs fsdp_version: 2 in the accelerate config (got {plugin.fsdp_version})"
        )
    # Both states, through their public attributes (each is one object per process): every later
    # AcceleratorState() copies PartialState's distributed_type back.
    PartialState().distributed_type = DistributedType.FSDP
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
    trainer.is_fsdp_enabled = True


def _trainer_class() -> type:
    """HF ``Trainer`` whose resume loads full-model checkpoints through ``from_pretrained``.

    ``save_pretrained`` writes a checkpoint's weights under the model family's original key names
    (``model.layers.*`` for Qwen2-VL), but ``Trainer._load_from_checkpoint`` (transformers 5.24) loads them
    with a raw ``load_state_dict(strict=False)``: every key is missed and the resumed run silently
    continues from the initial weights. Loading the checkpoint as a model applies the key conversion.
    LoRA adapters and FSDP checkpoints keep the stock path.
    """
    from transformers import Trainer

    class ResumingTrainer(Trainer):
        def create_accelerator_and_postprocess(self) -> None:
            super().create_accelerator_and_postprocess()
            _fsdp_on_cpu_processes(self)

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
            model = self.model if model is None else model
            full = (Path(resume_from_checkpoint) / "model.safetensors").is_file()
            if not full or self.is_fsdp_enabled or hasattr(model, "peft_config"):
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            loaded = type(model).from_pretrained(resume_from_checkpoint, dtype=model.dtype)
            missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
            if missing or unexpected:
                raise RuntimeError(
                    f"checkpoint {resume_from_checkpoint} does not fit the model: missing {missing[:5]}, "
                    f"unexpected {unexpected[:5]}"
                )

    return ResumingTrainer


def build_trainer(
    cfg: TrainConfig, model: Any, processor: Any, family: Family, records: list[dict[str, Any]]
) -> Any:
    """The HF Trainer of a run on ``records`` (images under ``cfg.data``): frozen vision tower and LoRA
    per ``cfg``, the records' dataset, padding or packing collator, checkpoints under ``cfg.out``.

    :func:`train` uses it; so does bench/gpu_check.py, on a model built in memory.
    """
    callbacks = [_cpu_budget_callback(cfg.max_minutes)] if cfg.max_minutes > 0 else []
    if _fsdp_asked():
        callbacks.append(_shard_check_callback())
    return _trainer_class()(
        model=_prepare(model, cfg),
        args=_training_args(cfg),
        train_dataset=RecordDataset(records, processor, family, cfg.data, cfg),
        data_collator=Collator(processor.tokenizer.pad_token_id, cfg.pack),
        callbacks=callbacks or None,
    )


def train(cfg: TrainConfig) -> TrainResult:
    """Train on ``cfg.data``'s ``cfg.split`` records and save the (merged) model into ``cfg.out``."""
    from transformers import set_seed

    set_seed(cfg.seed)
    records = read_records(cfg.data, cfg.split)
    if not records:
        raise ValueError(f"no records with split {cfg.split!r} in {cfg.data}; check the data engine's splits")
    model, processor, family = load_base(cfg, records)
    trainer = build_trainer(cfg, model, processor, family, records)
    model = trainer.model
    resume: str | bool | None = True if cfg.resume == "last" else cfg.resume
    cpu_start = time.process_time()
    trainer.train(resume_from_checkpoint=resume)
    cpu_seconds = time.process_time() - cpu_start
    # Every process takes part in the gather (FSDP all-gathers shards, ZeRO-3 consolidates 16-bit weights);
    # the main process alone writes the files.
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    out = Path(cfg.out)
    if trainer.is_world_process_zero():
        lora = model.peft_config["default"] if cfg.lora else None
        save_model(plain_model(family, model.config, state, lora), processor, family, cfg, out)
    trainer.accelerator.wait_for_everyone()
    losses = [(int(e["step"]), float(e["loss"])) for e in trainer.state.log_history if "loss" in e]
    return TrainResult(
        out, [(s, v) for s, v in losses if math.isfinite(v)], trainer.state.global_step, cpu_seconds
    )


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a dict; unknown keys raise, naming the known ones."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise KeyError(f"unknown training option(s) {unknown}; known: {', '.join(sorted(known))}")
    return TrainConfig(**values)
