"""Train :class:`~medground.textseg.model.TextSegHead` on cached embeddings (bench/embed_collection.py's cache).

Pairs (image, name): positives are the image's own structures; negatives are the names of the same
dataset not annotated on the image ("same protocol": the annotators would have drawn them) and names
of datasets of another modality ("cross-modality"). Names of other datasets of the same modality are
never used as negatives (a fundus image shows vessels whether or not its dataset drew them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from medground.icl.text import TextEncoder
from medground.textseg.model import HeadConfig, TextSegHead

__all__ = ["Cached", "Pair", "TrainConfig", "load_cache", "make_pairs", "train_head"]


@dataclass
class Cached:
    """Cached images of some splits: ``rows`` (index.jsonl lines), ``embeddings`` (N, g, g, 256) float32 at the
    head's grid, ``masks`` per image {name: (256, 256) bool model-frame mask}, ``texts`` {name: (384,) vector}."""

    rows: list[dict]
    embeddings: torch.Tensor
    masks: list[dict[str, np.ndarray]]
    texts: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Pair:
    """One question: image ``image`` (index into a :class:`Cached`), structure ``name``, ``kind``:
    "positive", "same" (same-dataset negative) or "cross" (cross-modality negative)."""

    image: int
    name: str
    kind: str

    @property
    def present(self) -> bool:
        return self.kind == "positive"


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 400
    batch: int = 16
    lr: float = 3e-3
    cross_per_image: int = 2  # cross-modality negatives drawn per image per epoch
    same_per_image: int = 2  # same-dataset negatives drawn per image per epoch (SA-Med2D has 20+ per image)
    seed: int = 0


def load_cache(cache: Path, splits: Iterable[str], pool: int, datasets: set[str] | None = None) -> Cached:
    """Rows of ``splits`` whose cached file exists (``datasets``: only these), pooled to the head's grid."""
    wanted = set(splits)
    rows = [json.loads(line) for line in (cache / "index.jsonl").read_text().splitlines() if line]
    rows = [
        r for r in rows
        if r["split"] in wanted and (cache / r["file"]).exists() and (datasets is None or r["dataset"] in datasets)
    ]  # fmt: skip
    embs, masks = [], []
    for r in rows:
        with np.load(cache / r["file"]) as z:
            e = torch.from_numpy(z["embedding"].astype(np.float32))  # (256, 64, 64)
            m = np.unpackbits(z["masks"], axis=-1)[..., :256].astype(bool)
        g = 64 // pool
        embs.append(e.reshape(256, g, pool, g, pool).mean((2, 4)).permute(1, 2, 0).contiguous())
        masks.append(dict(zip(r["names"], m, strict=True)))
    emb = torch.stack(embs) if embs else torch.zeros(0, 64 // pool, 64 // pool, 256)
    return Cached(rows, emb, masks)


def vocabulary(rows: list[dict]) -> tuple[dict[str, set[str]], dict[str, str]]:
    """({dataset: its names}, {dataset: modality}) from index rows."""
    names: dict[str, set[str]] = {}
    modality: dict[str, str] = {}
    for r in rows:
        names.setdefault(r["dataset"], set()).update(r["names"])
        modality[r["dataset"]] = r["modality"]
    return names, modality


def make_pairs(
    data: Cached,
    vocab: dict[str, set[str]],
    modality: dict[str, str],
    cross: int | None,
    rng: np.random.Generator,
    same: int | None = None,
) -> list[Pair]:
    """Every positive of each image, plus ``same`` random same-dataset negatives and ``cross`` random
    cross-modality names per image (None: all of them)."""
    pairs: list[Pair] = []
    for i, r in enumerate(data.rows):
        own = set(r["names"])
        pairs += [Pair(i, n, "positive") for n in sorted(own)]
        absent = _draw(sorted(vocab[r["dataset"]] - own), same, rng)
        pairs += [Pair(i, n, "same") for n in absent]
        other = sorted({n for d, ns in vocab.items() if modality[d] != r["modality"] for n in ns})
        pairs += [Pair(i, n, "cross") for n in _draw(other, cross, rng)]
    return pairs


def _draw(names: list[str], k: int | None, rng: np.random.Generator) -> list[str]:
    """``k`` of ``names`` at random (all when ``k`` is None or not smaller)."""
    if k is None or len(names) <= k:
        return names
    return [names[j] for j in sorted(rng.choice(len(names), k, replace=False))]


def embed_texts(data: Cached, names: Iterable[str], encoder: TextEncoder | None = None) -> None:
    """Fill ``data.texts`` with the MiniLM vector of every name."""
    names = sorted(set(names) - set(data.texts))
    if names:
        vecs = (encoder or TextEncoder()).encode(names)
        data.texts.update(dict(zip(names, vecs, strict=True)))


def batch_tensors(data: Cached, pairs: list[Pair], grid: int) -> tuple[torch.Tensor, ...]:
    """-> (embeddings (B, g, g, 256), texts (B, 384), soft grid targets (B, g, g), present (B,))."""
    emb = data.embeddings[[p.image for p in pairs]]
    text = torch.stack([data.texts[p.name] for p in pairs])
    k = 256 // grid
    targets = torch.zeros(len(pairs), grid, grid)
    for j, p in enumerate(pairs):
        if p.present:
            m = torch.from_numpy(data.masks[p.image][p.name].astype(np.float32))
            targets[j] = m.reshape(grid, k, grid, k).mean((1, 3))
    return emb, text, targets, torch.tensor([p.present for p in pairs], dtype=torch.float32)


def loss_fn(
    logits: torch.Tensor, presence: torch.Tensor, targets: torch.Tensor, present: torch.Tensor
) -> torch.Tensor:
    """Grid BCE on every pair + soft Dice on positives + presence BCE."""
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    prob = torch.sigmoid(logits).flatten(1)
    t = targets.flatten(1)
    dice = 1 - (2 * (prob * t).sum(1) + 1) / (prob.sum(1) + t.sum(1) + 1)
    dice = (dice * present).sum() / present.sum().clamp_min(1)
    return bce + dice + F.binary_cross_entropy_with_logits(presence, present)


def train_head(
    data: Cached,
    vocab: dict[str, set[str]],
    modality: dict[str, str],
    config: TrainConfig,
    head: HeadConfig,
    log=print,
) -> TextSegHead:
    """A head trained for ``config.steps`` AdamW steps (cosine schedule) on pairs redrawn each epoch."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = TextSegHead(head)
    grid = 64 // head.pool
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.steps, pct_start=0.1)
    order: list[Pair] = []
    start, running = time.perf_counter(), 0.0
    for step in range(config.steps):
        if len(order) < config.batch:
            order = make_pairs(data, vocab, modality, config.cross_per_image, rng, config.same_per_image)
            order = [order[j] for j in rng.permutation(len(order))]
        batch, order = order[: config.batch], order[config.batch :]
        emb, text, targets, present = batch_tensors(data, batch, grid)
        logits, presence = model(emb, text)
        loss = loss_fn(logits, presence, targets, present)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running = 0.95 * running + 0.05 * loss.item() if step else loss.item()
        if (step + 1) % 50 == 0:
            log(f"step {step + 1}/{config.steps} loss {running:.3f} ({time.perf_counter() - start:.0f} s)")
    return model.eval()
