"""Episode sampling: batches of E tasks, each with k support pairs and Q queries, augmented.

Every sample comes from a ``torch.Generator`` seeded by (seed, step), so a run and a resumed run see
the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medground.icl.augment import AugmentConfig, augment_examples, augment_task
from medground.icl.synthetic import synthetic_episode
from medground.icl.targets import SegTarget

__all__ = ["Batch", "EpisodeConfig", "sample_batch", "step_generator"]


@dataclass
class EpisodeConfig:
    """How episodes are drawn."""

    episodes: int = 4
    """Episodes (tasks) per batch, E."""
    queries: int = 2
    """Queries per episode, Q."""
    max_k: int = 8
    """Support size k is drawn uniformly from 1..max_k (one k per batch)."""
    p_text_only: float = 0.1
    """Probability that a batch has k = 0 and relies on text alone (real tasks only)."""
    p_text: float = 0.5
    """Probability that a real-task episode with k > 0 also gets its text."""
    p_synthetic: float = 0.3
    """Probability that an episode is a synthetic task instead of a real one."""


@dataclass
class Batch:
    """queries (E, Q, 3, S, S), query_masks (E, Q, 1, S, S), images (E, k, 3, S, S), masks (E, k, 1, S, S),
    text (E, 384) with all-zero rows for "no text"."""

    queries: torch.Tensor
    query_masks: torch.Tensor
    images: torch.Tensor
    masks: torch.Tensor
    text: torch.Tensor


def step_generator(seed: int, step: int) -> torch.Generator:
    """Generator for one training step, independent of all earlier steps."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def _real_examples(task: SegTarget, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n examples of a task, without replacement when it has enough, else with replacement."""
    if len(task) >= n:
        idx = torch.randperm(len(task), generator=gen)[:n]
    else:
        idx = torch.randint(0, len(task), (n,), generator=gen)
    return task.images[idx], task.masks[idx]


def _pick_task(pool: list[SegTarget], gen: torch.Generator) -> SegTarget:
    """A source uniformly, then one of its tasks uniformly (so a dataset with many one-image tasks
    does not dominate the episodes)."""
    sources = sorted({t.source for t in pool})
    source = sources[int(torch.randint(0, len(sources), (1,), generator=gen))]
    members = [t for t in pool if t.source == source]
    return members[int(torch.randint(0, len(members), (1,), generator=gen))]


def sample_batch(
    tasks: list[SegTarget],
    text_table: dict[str, torch.Tensor],
    size: int,
    gen: torch.Generator,
    cfg: EpisodeConfig,
    aug: AugmentConfig,
    min_k: int = 0,
) -> Batch:
    """Draw one augmented batch. ``text_table`` maps task text -> (384,) embedding; ``min_k`` = 1 disables k = 0."""
    texted = [t for t in tasks if t.text in text_table]
    text_only = min_k == 0 and bool(torch.rand(1, generator=gen) < cfg.p_text_only) and bool(texted)
    k = 0 if text_only else int(torch.randint(max(1, min_k), cfg.max_k + 1, (1,), generator=gen))
    n = k + cfg.queries
    rows = []
    for _ in range(cfg.episodes):
        synthetic = not text_only and bool(torch.rand(1, generator=gen) < cfg.p_synthetic)
        if synthetic or not tasks:
            images, masks = synthetic_episode(n, size, gen)
            text = torch.zeros(384)
        else:
            task = _pick_task(texted if text_only else tasks, gen)
            images, masks = _real_examples(task, n, gen)
            give_text = text_only or bool(torch.rand(1, generator=gen) < cfg.p_text)
            text = text_table[task.text] if give_text and task.text in text_table else torch.zeros(384)
        images, masks = augment_task(images, masks, gen, aug)
        images, masks = augment_examples(images, masks, gen, aug)
        rows.append((images, masks, text))
    images = torch.stack([r[0] for r in rows])
    masks = torch.stack([r[1] for r in rows])
    text = torch.stack([r[2] for r in rows])
    return Batch(images[:, k:], masks[:, k:], images[:, :k], masks[:, :k], text)
