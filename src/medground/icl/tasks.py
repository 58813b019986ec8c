"""Segmentation tasks for in-context learning: one task = one structure of one dataset.

Two readers build the same :class:`Task` list, already resized to the working size S:
- :func:`tasks_from_engine` reads a data-engine output folder (``records/*.jsonl`` + ``images/`` +
  ``masks/``): regions are grouped by (source, key) and the instances of a key are united per image;
- :func:`tasks_from_pairs` reads dataset folders with a ``pairs.csv`` (image, mask, structure), the
  layout of ``shared/data/medseg``; masks are foreground where value > 0 (instance maps united).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medground.icl.preprocess import load_array, prepare_image, prepare_mask
from medground.icl.text import clean_structure_name

__all__ = ["Task", "load_tasks", "split_by_source", "tasks_from_engine", "tasks_from_pairs"]


@dataclass
class Task:
    """All examples of one structure of one source at the working size.

    images: (n, 3, S, S) float32 in [0, 1]; masks: (n, 1, S, S) float32 in [0, 1]; ``text`` is the
    structure name used as prompt ("" for synthetic tasks); ``ids`` name the source images.
    """

    source: str
    key: str
    text: str
    images: torch.Tensor
    masks: torch.Tensor
    ids: list[str]

    @property
    def name(self) -> str:
        return f"{self.source}/{self.key}"

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _build(
    groups: dict[tuple[str, str], dict[str, list]],
    names: dict[tuple[str, str], str],
    size: int,
    min_examples: int,
) -> list[Task]:
    """groups[(source, key)][image_path] = [mask arrays] -> tasks with instances united per image."""
    tasks = []
    for (source, key), per_image in sorted(groups.items()):
        if len(per_image) < min_examples:
            continue
        images, masks, ids = [], [], []
        for image_path, mask_list in sorted(per_image.items()):
            union = np.any(np.stack([np.asarray(m) > 0 for m in mask_list]), axis=0)
            if not union.any():
                continue
            images.append(prepare_image(load_array(image_path), size, str(image_path)))
            masks.append(prepare_mask(union, size, str(image_path)))
            ids.append(str(image_path))
        if len(images) >= min_examples:
            tasks.append(
                Task(source, key, names[(source, key)], torch.stack(images), torch.stack(masks), ids)
            )
    return tasks


def tasks_from_engine(folder: Path, size: int, min_examples: int = 1) -> list[Task]:
    """Tasks from a data-engine output folder (records/*.jsonl, images/, masks/)."""
    folder = Path(folder)
    shards = sorted((folder / "records").glob("*.jsonl"))
    if not shards:
        raise FileNotFoundError(
            f"{folder}/records/*.jsonl not found; expected the output of `medground build`"
        )
    groups: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    names: dict[tuple[str, str], str] = {}
    seen: set[str] = set()
    for shard in shards:
        for line in shard.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec["image"] in seen:  # several records may share one image
                continue
            seen.add(rec["image"])
            for region in rec.get("regions", []):
                key = (rec["source"], region["key"])
                groups[key][str(folder / rec["image"])].append(load_array(folder / region["mask"]))
                names.setdefault(key, clean_structure_name(region.get("name") or region["key"]))
    return _build(groups, names, size, min_examples)


def tasks_from_pairs(folder: Path, size: int, min_examples: int = 1) -> list[Task]:
    """Tasks from one dataset folder with ``pairs.csv`` (columns image, mask, structure; relative paths)."""
    folder = Path(folder)
    table = folder / "pairs.csv"
    if not table.is_file():
        raise FileNotFoundError(
            f"{table} not found; expected a dataset folder with pairs.csv (image,mask,structure)"
        )
    groups: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    names: dict[tuple[str, str], str] = {}
    with table.open(newline="") as handle:
        for row in csv.DictReader(handle):
            structure = row["structure"].split("(")[0].strip()
            key = (folder.name, structure.replace(" ", "_"))
            groups[key][str(folder / row["image"])].append(load_array(folder / row["mask"]))
            names.setdefault(key, clean_structure_name(structure))
    return _build(groups, names, size, min_examples)


def load_tasks(paths: Iterable[Path], size: int, min_examples: int = 1) -> list[Task]:
    """Tasks from any mix of data-engine folders, ``pairs.csv`` dataset folders, or parents of those."""
    tasks: list[Task] = []
    for path in map(Path, paths):
        if (path / "records").is_dir():
            tasks += tasks_from_engine(path, size, min_examples)
        elif (path / "pairs.csv").is_file():
            tasks += tasks_from_pairs(path, size, min_examples)
        elif path.is_dir() and any((p / "pairs.csv").is_file() for p in path.iterdir()):
            for sub in sorted(p for p in path.iterdir() if (p / "pairs.csv").is_file()):
                tasks += tasks_from_pairs(sub, size, min_examples)
        else:
            raise FileNotFoundError(
                f"{path}: neither a data-engine output (records/) nor a dataset folder with pairs.csv "
                "nor a folder of such datasets"
            )
    return tasks


def split_by_source(tasks: list[Task], held_out: Iterable[str]) -> tuple[list[Task], list[Task]]:
    """(train, held-out) tasks: a task is held out when its source is in ``held_out``."""
    held = set(held_out)
    unknown = held - {t.source for t in tasks}
    if unknown:
        known = sorted({t.source for t in tasks})
        raise ValueError(f"held-out sources {sorted(unknown)} not found; known sources: {known}")
    return [t for t in tasks if t.source not in held], [t for t in tasks if t.source in held]
