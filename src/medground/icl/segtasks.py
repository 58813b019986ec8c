"""Segmentation tasks for in-context learning: one task = one structure of one dataset.

Two readers build the same :class:`Task` list, already resized to the working size S:
- :func:`tasks_from_engine` reads a data-engine output folder (``records/*.jsonl`` + ``images/`` +
  ``masks/``): regions are grouped by (source, key) and the instances of a key are united per image;
- :func:`tasks_from_source` reads a dataset in any layout the data engine reads (medseg ``pairs.csv``,
  SA-Med2D index, NIfTI or DICOM volumes, images/ + masks/) through the engine's own sources, so the
  model never parses a dataset layout itself; masks are foreground where value > 0 (instances united).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medground.data.sources import Item, SourceError, open_source
from medground.icl.preprocess import prepare_image, prepare_mask
from medground.icl.text import clean_structure_name
from medground.io import read_image, read_mask
from medground.types import Sample

__all__ = ["Task", "load_tasks", "split_by_source", "tasks_from_engine", "tasks_from_source"]


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
    image_of: Callable[[str], np.ndarray] = read_image,
) -> list[Task]:
    """groups[(source, key)][image id] = [mask arrays] -> tasks with instances united per image;
    ``image_of`` gives the image of an id (default: the id is a file path)."""
    tasks = []
    for (source, key), per_image in sorted(groups.items()):
        if len(per_image) < min_examples:
            continue
        images, masks, ids = [], [], []
        for image_path, mask_list in sorted(per_image.items()):
            union = np.any(np.stack([np.asarray(m) > 0 for m in mask_list]), axis=0)
            if not union.any():
                continue
            images.append(prepare_image(image_of(image_path), size, str(image_path)))
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
                groups[key][str(folder / rec["image"])].append(read_mask(folder / region["mask"]))
                names.setdefault(key, clean_structure_name(region.get("name") or region["key"]))
    return _build(groups, names, size, min_examples)


def tasks_from_source(spec: str | Path, size: int, min_examples: int = 1) -> list[Task]:
    """Tasks from one dataset (``PATH`` or ``KIND:PATH``) read by the data engine's sources; a
    structure's key drops parenthesised notes ("cell nuclei (instance label map)" -> cell_nuclei)."""
    source = open_source(spec)
    groups: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    names: dict[tuple[str, str], str] = {}
    images: dict[str, np.ndarray] = {}
    for item in source.items():
        if not isinstance(item, Item):
            continue
        for sample in source.load(item):
            if not isinstance(sample, Sample):
                continue
            images[sample.id] = np.asarray(sample.image)
            for structure in sample.structures:
                name = structure.name.split("(")[0].strip()
                key = (source.name, name.replace(" ", "_"))
                groups[key][sample.id].append(structure.mask)
                names.setdefault(key, clean_structure_name(name))
    return _build(groups, names, size, min_examples, images.__getitem__)


def _tasks_from_folder_of_datasets(path: Path, size: int, min_examples: int, reason: str) -> list[Task]:
    tasks: list[Task] = []
    found = False
    for sub in sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []:
        try:
            tasks += tasks_from_source(sub, size, min_examples)
            found = True
        except SourceError:
            continue
    if not found:
        raise FileNotFoundError(
            f"{path}: neither a data-engine output (records/), nor a dataset the data engine reads (pairs.csv, "
            f"SA-Med2D index, imagesTr/+labelsTr/, images/+masks/, DICOM series), nor a folder of such datasets "
            f"({reason})"
        )
    return tasks


def load_tasks(paths: Iterable[Path], size: int, min_examples: int = 1) -> list[Task]:
    """Tasks from any mix of data-engine folders, datasets the data engine reads, or parents of those."""
    tasks: list[Task] = []
    for path in map(Path, paths):
        if (path / "records").is_dir():
            tasks += tasks_from_engine(path, size, min_examples)
            continue
        try:
            tasks += tasks_from_source(path, size, min_examples)
        except SourceError as error:
            tasks += _tasks_from_folder_of_datasets(path, size, min_examples, str(error))
    return tasks


def split_by_source(tasks: list[Task], held_out: Iterable[str]) -> tuple[list[Task], list[Task]]:
    """(train, held-out) tasks: a task is held out when its source is in ``held_out``."""
    held = set(held_out)
    unknown = held - {t.source for t in tasks}
    if unknown:
        known = sorted({t.source for t in tasks})
        raise ValueError(f"held-out sources {sorted(unknown)} not found; known sources: {known}")
    return [t for t in tasks if t.source not in held], [t for t in tasks if t.source in held]
