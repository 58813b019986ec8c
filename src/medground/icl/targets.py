"""Segmentation targets for in-context learning: one target = one structure of one dataset.

("Task" means a conversation task of the data engine, :mod:`medground.tasks`; what the in-context
segmenter learns and is scored on is a segmentation target, :class:`SegTarget`. Result rows keep
their ``task`` column name for compatibility with the committed reports.) Two readers build the same
target list, already resized to the working size S:
- :func:`targets_from_engine` reads a data-engine output folder (``records/*.jsonl`` + ``images/`` +
  ``masks/`` PNGs or COCO RLE in the records, read by :func:`medground.io.region_mask`): regions are grouped by (source, key) and the instances of a key are united per image;
- :func:`targets_from_source` reads a dataset in any layout the data engine reads (the kinds of
  ``medground.data.sources.REGISTRY``) through the engine's own sources, so the
  model never parses a dataset layout itself; masks are foreground where value > 0 (instances united).

Nothing is dropped silently: every rejected item, empty mask and too-small task is listed in
:attr:`SegTargetSet.skipped` with its reason. Each example keeps its patient key (``None`` when the
dataset does not say which patient an image shows), so evaluation can keep supports and queries
apart by patient.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medground.data.sources import Item, SourceError, open_source
from medground.icl.preprocess import prepare_image, prepare_mask
from medground.icl.protocol import expand_held_out
from medground.io import read_image, region_mask
from medground.names import clean_name, icl_key
from medground.types import Rejected, Sample

__all__ = [
    "SegTarget",
    "SegTargetSet",
    "Skip",
    "load_targets",
    "targets_from_engine",
    "targets_from_source",
    "split_held_out",
]


@dataclass
class SegTarget:
    """All examples of one structure of one source at the working size.

    images: (n, 3, S, S) float32 in [0, 1]; masks: (n, 1, S, S) float32 in [0, 1]; ``text`` is the
    structure name used as prompt ("" for synthetic tasks); ``ids`` name the source images;
    ``cases`` the patient key of each example (None = unknown); ``full_masks`` (only when loaded with
    ``keep_full``) the (H, W) bool mask of each example at its own resolution, for scoring.
    """

    source: str
    key: str
    text: str
    images: torch.Tensor
    masks: torch.Tensor
    ids: list[str]
    cases: list[str | None] = field(default_factory=list)
    full_masks: list[np.ndarray] | None = None

    def __post_init__(self) -> None:
        if not self.cases:
            self.cases = [None] * len(self.ids)

    @property
    def name(self) -> str:
        return f"{self.source}/{self.key}"

    @property
    def patients_known(self) -> bool:
        """True when every example names its patient."""
        return all(self.cases)

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class Skip:
    """Something the loader did not use: ``what`` (file, image id or task name) and why."""

    what: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"what": self.what, "reason": self.reason}


@dataclass
class SegTargetSet:
    """Loaded targets plus everything that was skipped on the way."""

    tasks: list[SegTarget] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)

    def __iadd__(self, other: SegTargetSet) -> SegTargetSet:
        self.tasks += other.tasks
        self.skipped += other.skipped
        return self

    def summary(self) -> str:
        """One line per skip reason with its count (for the terminal)."""
        counts: dict[str, int] = defaultdict(int)
        for skip in self.skipped:
            counts[skip.reason.split(":")[0]] += 1
        head = f"{len(self.tasks)} segmentation tasks loaded, {len(self.skipped)} items skipped"
        return "\n".join([head] + [f"  {n} x {reason}" for reason, n in sorted(counts.items())])


@dataclass
class _Example:
    """One image's masks of one structure, gathered before resizing."""

    case: str | None
    masks: list = field(default_factory=list)


def _build(
    groups: dict[tuple[str, str], dict[str, _Example]],
    names: dict[tuple[str, str], str],
    size: int,
    min_examples: int,
    keep_full: bool,
    image_of: Callable[[str], np.ndarray] = read_image,
) -> SegTargetSet:
    """groups[(source, key)][image id] = example -> tasks with instances united per image;
    ``image_of`` gives the image of an id (default: the id is a file path)."""
    out = SegTargetSet()
    for (source, key), per_image in sorted(groups.items()):
        name = f"{source}/{key}"
        images, masks, ids, cases, full = [], [], [], [], []
        for image_id, example in sorted(per_image.items()):
            union = np.any(np.stack([np.asarray(m) > 0 for m in example.masks]), axis=0)
            if not union.any():
                out.skipped.append(Skip(f"{name} @ {image_id}", "empty mask: no foreground pixel"))
                continue
            images.append(prepare_image(image_of(image_id), size, str(image_id)))
            masks.append(prepare_mask(union, size, str(image_id)))
            ids.append(str(image_id))
            cases.append(example.case or None)
            full.append(union)
        if len(images) < min_examples:
            out.skipped.append(
                Skip(name, f"too few examples: {len(images)} usable image(s), needs {min_examples}")
            )
            continue
        out.tasks.append(
            SegTarget(
                source,
                key,
                names[(source, key)],
                torch.stack(images),
                torch.stack(masks),
                ids,
                cases,
                full if keep_full else None,
            )
        )
    return out


def targets_from_engine(
    folder: Path, size: int, min_examples: int = 1, keep_full: bool = False
) -> SegTargetSet:
    """Tasks from a data-engine output folder (records/*.jsonl, images/, masks/ or RLE); a record's
    ``case`` (null = unknown) is the patient key."""
    folder = Path(folder)
    shards = sorted((folder / "records").glob("*.jsonl"))
    if not shards:
        raise FileNotFoundError(
            f"{folder}/records/*.jsonl not found; expected the output of `medground build`"
        )
    groups: dict[tuple[str, str], dict[str, _Example]] = defaultdict(dict)
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
                image = str(folder / rec["image"])
                example = groups[key].setdefault(image, _Example(rec.get("case") or None))
                example.masks.append(region_mask(folder, region, shard))
                names.setdefault(key, clean_name(region.get("name") or region["key"]))
    return _build(groups, names, size, min_examples, keep_full)


def targets_from_source(
    spec: str | Path, size: int, min_examples: int = 1, keep_full: bool = False
) -> SegTargetSet:
    """Tasks from one dataset (``PATH`` or ``KIND:PATH``) read by the data engine's sources; a
    structure's key drops parenthesised notes ("cell nuclei (instance label map)" -> cell_nuclei).
    The sample's ``case`` is the patient key (None or "" = unknown)."""
    source = open_source(spec)
    groups: dict[tuple[str, str], dict[str, _Example]] = defaultdict(dict)
    names: dict[tuple[str, str], str] = {}
    images: dict[str, np.ndarray] = {}
    skipped: list[Skip] = []
    for item in source.items():
        if not isinstance(item, Item):
            skipped.append(_rejected(item))
            continue
        for sample in source.load(item):
            if not isinstance(sample, Sample):
                skipped.append(_rejected(sample))
                continue
            images[sample.id] = np.asarray(sample.image)
            for structure in sample.structures:
                key = (source.name, icl_key(structure.name))
                example = groups[key].setdefault(sample.id, _Example(sample.case or None))
                example.masks.append(structure.mask)
                names.setdefault(key, clean_name(structure.name))
    out = _build(groups, names, size, min_examples, keep_full, images.__getitem__)
    out.skipped = skipped + out.skipped
    return out


def _rejected(entry: Rejected) -> Skip:
    return Skip(entry.input, f"rejected by the {entry.source or 'data'} source: {entry.reason}")


def _targets_from_folder_of_datasets(
    path: Path, size: int, min_examples: int, keep_full: bool, reason: str
) -> SegTargetSet:
    out, found = SegTargetSet(), False
    for sub in sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []:
        try:
            out += targets_from_source(sub, size, min_examples, keep_full)
            found = True
        except SourceError as error:
            out.skipped.append(Skip(str(sub), f"not a dataset the data engine reads: {error}"))
    if not found:
        raise FileNotFoundError(
            f"{path}: neither a data-engine output (records/), nor a dataset the data engine reads, nor a folder "
            f"of such datasets ({reason})"  # an unknown layout's reason lists the registry's layouts
        )
    return out


def load_targets(
    paths: Iterable[Path | str], size: int, min_examples: int = 1, keep_full: bool = False
) -> SegTargetSet:
    """Tasks from any mix of data-engine folders, datasets the data engine reads, or parents of those.

    ``keep_full`` keeps every example's mask at its own resolution (evaluation scores there).
    """
    out = SegTargetSet()
    for path in map(Path, paths):
        if (path / "records").is_dir():
            out += targets_from_engine(path, size, min_examples, keep_full)
            continue
        try:
            out += targets_from_source(path, size, min_examples, keep_full)
        except SourceError as error:
            out += _targets_from_folder_of_datasets(path, size, min_examples, keep_full, str(error))
    return out


def split_held_out(
    tasks: list[SegTarget], held_out: Iterable[str]
) -> tuple[list[SegTarget], list[SegTarget]]:
    """(train, held-out) tasks: a task is held out when its source, or a member of its domain group
    (:mod:`medground.icl.protocol`), is named in ``held_out``; an unknown name is an error."""
    held = expand_held_out(held_out, {t.source for t in tasks})
    return [t for t in tasks if t.source not in held], [t for t in tasks if t.source in held]
