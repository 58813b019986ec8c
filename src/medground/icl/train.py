"""Episodic training of RidgeSeg (ours, default), PoolSeg (ours, earlier) or the UniverSeg baseline: ``train(TrainConfig) -> model folder``.

The output folder describes itself: ``config.json`` + ``model.safetensors`` (the model),
``meta.json`` (training config, data fingerprint, tasks used), ``losses.json`` + ``loss.png`` (curve),
and ``checkpoint/`` (model, optimizer and step, all safetensors/JSON, no pickle) for ``resume``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from safetensors.torch import load_file, save_file
from torch import nn

from medground.icl.augment import AugmentConfig
from medground.icl.episodes import Batch, EpisodeConfig, sample_batch, step_generator
from medground.icl.model import PoolSeg, PoolSegConfig
from medground.icl.segmenter import save_pretrained
from medground.icl.solver import RidgeSeg, RidgeSegConfig
from medground.icl.targets import SegTarget, Skip, load_targets, split_held_out
from medground.icl.universeg import UniverSeg, UniverSegConfig

__all__ = ["ARCHITECTURES", "TrainConfig", "batch_logits", "build_model", "seg_loss", "train"]

ARCHITECTURES = ("ridgeseg", "poolseg", "universeg")


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved in meta.json)."""

    data: list[str] = field(default_factory=list)
    """Data-engine output folders and/or pairs.csv dataset folders (or their parent)."""
    out: str = "runs/icl/ridgeseg"
    """Output folder."""
    held_out: list[str] = field(default_factory=list)
    """Sources (dataset names) excluded from training, for out-of-distribution evaluation."""
    architecture: str = "ridgeseg"
    """ridgeseg (ours), poolseg (ours, earlier) or universeg (baseline re-implementation)."""
    size: int = 64
    """Working resolution S."""
    widths: list[int] = field(default_factory=lambda: [16, 32, 48, 64])
    """PoolSeg widths per scale (RidgeSeg and UniverSeg use their own defaults)."""
    steps: int = 1500
    """Optimisation steps."""
    lr: float = 2e-3
    """AdamW learning rate (cosine decay to 5% over the run)."""
    seed: int = 0
    """Seed of every random draw."""
    threads: int = 1
    """torch CPU threads."""
    device: str = "cpu"
    """torch device (cpu or cuda)."""
    checkpoint_every: int = 100
    """Steps between checkpoints."""
    max_minutes: float = 0.0
    """Stop (and save) after this many wall-clock minutes in this session; 0 = no limit."""
    episodes: EpisodeConfig = field(default_factory=EpisodeConfig)
    """Episode sampling."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Augmentation."""


def build_model(cfg: TrainConfig) -> nn.Module:
    """The network named by ``cfg.architecture``."""
    if cfg.architecture == "ridgeseg":
        return RidgeSeg(RidgeSegConfig(size=cfg.size))
    if cfg.architecture == "poolseg":
        return PoolSeg(PoolSegConfig(size=cfg.size, widths=tuple(cfg.widths)))
    if cfg.architecture == "universeg":
        return UniverSeg(UniverSegConfig(size=cfg.size))
    raise ValueError(f"unknown architecture {cfg.architecture!r}; known: {list(ARCHITECTURES)}")


def batch_logits(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Logits (E, Q, 1, S, S) for a batch, through the in-context interface every architecture has."""
    return model.segment(batch.queries, model.encode_support(batch.images, batch.masks, batch.text))


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice (per image, averaged): logits/target (..., 1, S, S), target in [0, 1]."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits).flatten(-3)
    tgt = target.flatten(-3)
    dice = (2 * (prob * tgt).sum(-1) + 1) / (prob.sum(-1) + tgt.sum(-1) + 1)
    return bce + (1 - dice).mean()


def data_fingerprint(paths: list[str], tasks: list[SegTarget]) -> str:
    """sha256 over each input's manifest.json / pairs.csv bytes and the task list."""
    digest = hashlib.sha256()
    for path in sorted(map(Path, paths)):
        for name in ("manifest.json", "pairs.csv"):
            for found in sorted(path.glob(f"**/{name}"))[:200]:
                digest.update(found.read_bytes())
    digest.update(json.dumps(sorted((t.name, len(t)) for t in tasks)).encode())
    return digest.hexdigest()


def _save_checkpoint(
    folder: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int, losses: list
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    state = opt.state_dict()
    tensors = {f"{i}.{name}": v.contiguous() for i, s in state["state"].items() for name, v in s.items()}
    save_file(tensors, str(folder / "optim.safetensors"))
    meta = {"step": step, "losses": losses, "param_groups": state["param_groups"]}
    tmp = folder / "state.json.tmp"
    tmp.write_text(json.dumps(meta))
    tmp.replace(folder / "state.json")


def _load_checkpoint(folder: Path, model: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, list]:
    meta = json.loads((folder / "state.json").read_text())
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    state: dict = {"state": {}, "param_groups": meta["param_groups"]}
    for key, value in load_file(str(folder / "optim.safetensors")).items():
        idx, name = key.split(".", 1)
        state["state"].setdefault(int(idx), {})[name] = value
    opt.load_state_dict(state)
    return int(meta["step"]), list(meta["losses"])


def _plot_losses(losses: list[list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [s for s, _ in losses]
    values = torch.tensor([v for _, v in losses])
    window = max(1, len(values) // 50)
    smooth = values.unfold(0, window, 1).mean(1) if len(values) >= window else values
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, values.tolist(), alpha=0.3, label="loss")
    ax.plot(steps[window - 1 :], smooth.tolist(), label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("BCE + soft Dice")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _text_table(tasks: list[SegTarget], text_encoder) -> dict[str, torch.Tensor]:
    texts = sorted({t.text for t in tasks if t.text})
    if not texts or text_encoder is None:
        return {}
    return dict(zip(texts, text_encoder.encode(texts), strict=True))


def _optimizer(
    cfg: TrainConfig, model: nn.Module
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with a cosine decay from lr to 5% of it over cfg.steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            0.05 + 0.95 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * min(s, cfg.steps) / cfg.steps))).item()
        ),
    )
    return opt, sched


def _step(model: nn.Module, opt: torch.optim.Optimizer, sched, batch: Batch, device: str) -> float:
    """One optimisation step on a batch; returns the loss."""
    batch = Batch(
        *(t.to(device) for t in (batch.queries, batch.query_masks, batch.images, batch.masks, batch.text))
    )
    loss = seg_loss(batch_logits(model, batch), batch.query_masks)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    return loss.item()


def _training_tasks(
    cfg: TrainConfig, text_encoder, tasks: list[SegTarget] | None
) -> tuple[list[SegTarget], dict[str, torch.Tensor], list[Skip]]:
    """The tasks not held out (held-out names expand to their domain groups), their text embeddings
    (not for UniverSeg, which takes no text) and what loading skipped (printed, saved in meta.json)."""
    skipped: list[Skip] = []
    if tasks is None:
        loaded = load_targets(cfg.data, cfg.size)
        tasks, skipped = loaded.tasks, loaded.skipped
        print(loaded.summary())
    train_tasks, _ = split_held_out(tasks, cfg.held_out)
    if cfg.architecture == "universeg":
        return train_tasks, {}, skipped
    if text_encoder is None:
        from medground.icl.text import TextEncoder

        text_encoder = TextEncoder()
    return train_tasks, _text_table(train_tasks, text_encoder), skipped


def train(
    cfg: TrainConfig,
    resume: bool = True,
    text_encoder=None,
    tasks: list[SegTarget] | None = None,
    progress: bool = True,
    stop_at: int | None = None,
) -> Path:
    """Train and write the model folder ``cfg.out``; returns it.

    ``text_encoder`` (``.encode(list[str]) -> (N, 384)``) defaults to the bundled all-MiniLM-L6-v2;
    ``tasks`` overrides loading ``cfg.data`` (tests). Resumes from ``cfg.out/checkpoint`` when present.
    ``stop_at`` ends this session after that many steps (checkpoint saved), as an interruption would.
    """
    from tqdm import tqdm

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    train_tasks, table, skipped = _training_tasks(cfg, text_encoder, tasks)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(cfg.device)
    opt, sched = _optimizer(cfg, model)
    step, losses = 0, []
    ckpt = out / "checkpoint"
    if resume and (ckpt / "state.json").is_file():
        step, losses = _load_checkpoint(ckpt, model, opt)
        sched.last_epoch = step
    min_k = 1 if cfg.architecture == "universeg" else 0
    start = time.time()
    bar = tqdm(range(step, cfg.steps), initial=step, total=cfg.steps, disable=not progress, desc="icl-train")
    for step in bar:
        batch = sample_batch(
            train_tasks, table, cfg.size, step_generator(cfg.seed, step), cfg.episodes, cfg.augment, min_k
        )
        value = _step(model, opt, sched, batch, cfg.device)
        losses.append([step, round(value, 5)])
        bar.set_postfix(loss=f"{value:.3f}")
        out_of_time = cfg.max_minutes > 0 and time.time() - start > 60 * cfg.max_minutes
        out_of_time = out_of_time or (stop_at is not None and step + 1 >= stop_at)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps or out_of_time:
            _save_checkpoint(ckpt, model, opt, step + 1, losses)
        if out_of_time:
            break
    _finish(cfg, model.cpu(), out, losses, train_tasks, skipped, time.time() - start)
    return out


def _finish(
    cfg: TrainConfig,
    model: nn.Module,
    out: Path,
    losses: list,
    tasks: list[SegTarget],
    skipped: list[Skip],
    seconds: float,
) -> None:
    meta = {
        "train_config": asdict(cfg),
        "data_sha256": data_fingerprint(cfg.data, tasks),
        "tasks": sorted(t.name for t in tasks),
        "skipped": [s.as_dict() for s in skipped],
        "seconds_last_session": round(seconds, 1),
        "final_loss_mean_last_50": sum(v for _, v in losses[-50:]) / max(1, len(losses[-50:])),
    }
    save_pretrained(model, out, meta)
    (out / "losses.json").write_text(json.dumps(losses))
    if losses:
        _plot_losses(losses, out / "loss.png")
