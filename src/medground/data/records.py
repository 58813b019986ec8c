"""One sample -> conversation records and the files they point at (the per-image step of a build).

Nothing here touches shards or workers: :func:`make_records` is a pure function of the sample, the
label set of the protocol that labelled it and the build config (randomness is seeded by the sample
id), and :func:`save_sample` writes the image and, when masks are stored as files (``masks="png"``), one
0/255 mask PNG per region instance; with ``masks="rle"`` each region carries its mask as COCO RLE in the
record instead (:mod:`medground.io.masks`, which reads both forms).

Two truths are decided here. The split is a seeded hash of the patient key alone (:func:`split_of`),
so one patient reaching a build through two sources lands in one split, and images of unknown
patients all go to train. A structure is called absent (:func:`absent_names`) only where that is
known: the image's labelling protocol labels it exhaustively, it has no pixel in this image (specks
included), it is not labelled in neighbouring slices of the case, and nothing it is part of or that
is part of it is present; otherwise only anatomy of distant body regions is called absent.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from medground.data.generators import ImageContext, TaskConfig, Turn, make_conversation
from medground.data.knowledge import distant_structures, related
from medground.data.pseudonyms import pseudonym
from medground.data.regions import RegionConfig, extract_regions
from medground.grounding import Dialect, get_dialect
from medground.io import MASK_FORMATS, copy_image, encode_rle, write_mask_png, write_png
from medground.names import clean_name
from medground.tasks import TASKS, unknown_tasks_message
from medground.types import Box, Region, Rejected, Sample, StructureMask

__all__ = [
    "NEGATIVE_RULES",
    "RecordConfig",
    "absent_names",
    "make_records",
    "present_as_read",
    "resize_sample",
    "save_sample",
    "split_of",
    "verify_turn",
]

MICROSCOPIC: frozenset[str] = frozenset({"histopathology", "microscopy"})
"""Modalities whose images show tissue, not anatomy: a kidney biopsy tile *is* kidney, so no organ is
called absent from them by the distant-anatomy rule."""

NEGATIVE_RULES: tuple[str, ...] = ("protocol", "distant")
"""Why a structure may be called absent: the image's labelling protocol labels it exhaustively and
it is not there ("protocol"), or it belongs to a body region far from the image's ("distant")."""


@dataclass(frozen=True)
class RecordConfig:
    """Everything that decides the records of one sample."""

    seed: int = 0  # seeds phrasing, task choice and splits
    dialect: str = "qwen-vl-grid"  # box dialect of the conversations (see medground.grounding)
    max_side: int | None = None  # resize saved images so that the longer side is at most this (None: keep)
    conversations_per_image: int = 1  # records per image, each a differently seeded conversation
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train/val/test shares of the cases
    regions: RegionConfig = field(default_factory=RegionConfig)
    tasks: TaskConfig = field(default_factory=TaskConfig)
    masks: str = "png"  # region masks as one PNG file each ("png") or COCO RLE in the records ("rle")
    keep_image_metadata: bool = False  # copy input images with their EXIF/XMP/PNG text (default: dropped)

    def __post_init__(self) -> None:
        get_dialect(self.dialect)
        if self.masks not in MASK_FORMATS:
            raise ValueError(f"masks must be one of {', '.join(MASK_FORMATS)}, got {self.masks!r}")
        if self.max_side is not None and self.max_side < 16:
            raise ValueError(f"max_side must be at least 16 px, got {self.max_side}")
        if self.conversations_per_image < 1:
            raise ValueError(f"conversations_per_image must be >= 1, got {self.conversations_per_image}")
        if (
            len(self.split_ratios) != 3
            or abs(sum(self.split_ratios) - 1.0) > 1e-6
            or min(self.split_ratios) < 0
        ):
            raise ValueError(
                f"split_ratios must be three non-negative shares summing to 1, got {self.split_ratios}"
            )


def split_of(case: str | None, seed: int, ratios: tuple[float, float, float]) -> str:
    """train/val/test for a patient: a seeded hash of the patient key alone (not of the source), so
    every image of a patient goes together, whichever source it comes through. An unknown patient
    (None) is never split by image: it goes to train."""
    if case is None:
        return "train"
    digest = hashlib.sha256(f"{seed}\x00{case}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "train" if u < ratios[0] else "val" if u < ratios[0] + ratios[1] else "test"


def resize_sample(sample: Sample, max_side: int | None) -> Sample:
    """The sample with its longer side at most ``max_side`` (image bilinear, masks nearest).

    Nearest-neighbour resizing can drop a small structure (a 3 x 3 tumour in a 1024^2 image is gone at
    256), so what was present as read is kept in ``meta["present"]``: the negatives are decided on it.
    """
    if max_side is None or max(sample.height, sample.width) <= max_side:
        return sample
    scale = max_side / max(sample.height, sample.width)
    size = (max(1, round(sample.width * scale)), max(1, round(sample.height * scale)))
    image = np.asarray(Image.fromarray(np.asarray(sample.image)).resize(size, Image.Resampling.BILINEAR))
    structures = []
    for s in sample.structures:
        resized = np.asarray(Image.fromarray(s.mask.astype(np.int32)).resize(size, Image.Resampling.NEAREST))
        mask = resized.astype(bool) if s.mask.dtype == bool else resized.astype(s.mask.dtype)
        structures.append(StructureMask(s.name, mask, s.instance, s.instance_map))
    spacing = None if sample.spacing is None else (sample.spacing[0] / scale, sample.spacing[1] / scale)
    meta = {
        k: v for k, v in sample.meta.items() if k != "file"
    }  # pixels changed: the file is no copy any more
    meta["resized_from"] = [sample.width, sample.height]
    meta["present"] = sorted(present_as_read(sample))
    return Sample(
        sample.id,
        image,
        sample.modality,
        sample.source,
        sample.case,
        structures,
        sample.plane,
        sample.body_region,
        spacing,
        sample.display,
        meta,
    )


def image_path(sample: Sample) -> str:
    """Where a sample's image is saved: its own file's suffix when it is copied as stored, else PNG."""
    stored = sample.meta.get("file")
    suffix = Path(stored).suffix.lower() if stored else ".png"
    return f"images/{sample.id}{suffix}"


@functools.lru_cache(maxsize=1024)
def _file_parts(keys: tuple[str, ...]) -> dict[str, str]:
    """File-name-safe forms of an image's structure keys. Keys that would share one ("left kidney",
    "left_kidney") each get 8 hex digits of their sha256, so no mask file is written twice."""
    safe = {key: re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_") or "structure" for key in keys}
    taken = Counter(safe.values())
    return {
        key: name if taken[name] == 1 else f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
        for key, name in safe.items()
    }


def mask_paths(sample: Sample, regions: list[Region]) -> list[str]:
    """Where each region's mask PNG is saved (``masks="png"``), relative to the build folder."""
    parts = _file_parts(tuple(sorted({s.name for s in sample.structures})))
    return [f"masks/{sample.id}/{parts[r.key]}_{r.instance:03d}.png" for r in regions]


def verify_turn(turn: Turn, regions: list[Region], dialect: Dialect, width: int, height: int) -> str | None:
    """Why a turn is wrong, or None: the boxes in a turn of a boxing task (:attr:`TaskSpec.boxes` in
    :data:`medground.tasks.TASKS`: REC, ROC, REG) must be exactly the boxes of its regions; a negative
    turn and a turn of a task without boxes (MIA) must hold none.

    Boxes are compared after the dialect's quantisation (:meth:`Dialect.quantise` of the expected box).
    """
    spec = TASKS.get(turn.task)
    if spec is None:
        return unknown_tasks_message([turn.task])
    found = dialect.parse(turn.question, width, height) + dialect.parse(turn.answer, width, height)
    got: set[Box] = {g.box for g in found}
    if turn.negative:
        return "negative turn mentions a box" if got else None
    if not spec.boxes:
        return f"{turn.task} turn mentions a box but its task holds none" if got else None
    expected = {dialect.quantise(regions[i].box, width, height) for i in turn.regions}
    if got != expected:
        return f"{turn.task} turn boxes {sorted(b.as_list() for b in got)} != region boxes {sorted(b.as_list() for b in expected)}"
    return None


def present_as_read(sample: Sample) -> set[str]:
    """Raw keys with a pixel in the masks as the source read them (before any resize), and keys whose
    mask was rejected (``meta["unsure"]``: unreadable, the wrong size, undeclared values): nobody knows
    those are absent."""
    found = {s.name for s in sample.structures if s.mask.any()}
    return found | set(sample.meta.get("present", ())) | set(sample.meta.get("unsure", ()))


def absent_names(sample: Sample, vocabulary: list[str] | None) -> tuple[list[str], str | None]:
    """Structures a negative question may ask about, and the rule that chose them (or None: none).

    ``vocabulary`` is the label set of the protocol that labelled this image (None: unknown). A
    structure of it is absent ("protocol") unless it has any pixel in this image as read (specks
    included: too small to ask about is not absent; before any resize: :func:`present_as_read`), its
    mask was rejected, it is labelled in a neighbouring slice of the case (``meta["nearby"]``), or it is
    part of / contains a structure present or nearby (no "no kidney" beside "left kidney", "kidneys").
    When that leaves nothing, anatomy of distant body regions is absent ("distant": no liver in a brain
    MRI), with the same part-of check; never in histopathology or microscopy.
    """
    present = present_as_read(sample) | set(sample.meta.get("nearby", ()))
    present_names = {clean_name(p) for p in present}

    def allowed(names: set[str]) -> list[str]:
        return sorted(n for n in names - present_names if not any(related(n, p) for p in present_names))

    hard = allowed({clean_name(k) for k in vocabulary or ()})
    if hard:
        return hard, "protocol"
    if not sample.body_region or sample.modality in MICROSCOPIC:
        return [], None
    distant = allowed(set(distant_structures(sample.body_region, kind="anatomy")))
    return distant, "distant" if distant else None


def make_records(
    sample: Sample, vocabulary: list[str] | None, config: RecordConfig
) -> tuple[list[dict], list[Region], list[Rejected]]:
    """Conversation records of one sample, its regions, and rejections (speck-only or unverifiable).

    ``vocabulary``: raw keys that the protocol which labelled this sample labels exhaustively (None when
    that protocol is unknown: only distant-anatomy negatives).
    """
    names = {s.name: clean_name(s.name) for s in sample.structures}
    regions, dropped = extract_regions(
        sample.structures, names, sample.display == "radiological", config.regions
    )
    rejected = [
        Rejected(sample.id, f"structure {key!r}: every component is below the speck threshold", sample.source)
        for key in dropped
    ]
    if not regions:
        return [], [], [*rejected, Rejected(sample.id, "no region left after speck removal", sample.source)]
    absent, rule = absent_names(sample, vocabulary)
    dialect = get_dialect(config.dialect)
    context = ImageContext(
        sample.width, sample.height, sample.modality, sample.plane, sample.body_region, sample.source
    )
    split = split_of(sample.case, config.seed, config.split_ratios)
    region_rows = [
        {
            "name": r.name,
            "key": r.key,
            "box": r.box.as_list(),
            **mask,
            "instance": r.instance,
            "area": r.area,
            "position": r.position,
        }
        for r, mask in zip(regions, _mask_fields(sample, regions, config.masks), strict=True)
    ]
    records = []
    for index in range(config.conversations_per_image):
        rng = random.Random(f"{config.seed}:{sample.id}:{index}")
        turns = make_conversation(context, regions, absent, dialect, rng, config.tasks)
        problems = [p for t in turns if (p := verify_turn(t, regions, dialect, sample.width, sample.height))]
        if problems:
            rejected.append(
                Rejected(sample.id, f"conversation {index} failed verification: {problems[0]}", sample.source)
            )
            continue
        negative_rule = rule if any(t.negative for t in turns) else None
        records.append(_record(sample, index, split, config.dialect, turns, region_rows, negative_rule))
    return records, regions, rejected


def _mask_fields(sample: Sample, regions: list[Region], masks: str) -> list[dict]:
    """Each region's mask entry: ``{"mask": PNG path}`` or ``{"rle": COCO RLE of the image's size}``."""
    if masks == "png":
        return [{"mask": path} for path in mask_paths(sample, regions)]
    return [
        {"rle": encode_rle(r.mask, top=r.box.y0, left=r.box.x0, height=sample.height, width=sample.width)}
        for r in regions
    ]


def _record(
    sample: Sample,
    index: int,
    split: str,
    dialect: str,
    turns: list[Turn],
    regions: list[dict],
    negative_rule: str | None,
) -> dict:
    conversations = []
    for number, turn in enumerate(turns):
        prefix = "<image>\n" if number == 0 else ""
        conversations.append({"from": "human", "value": prefix + turn.question})
        conversations.append({"from": "gpt", "value": turn.answer})
    return {
        "id": f"{sample.id}#{index}",
        "image": image_path(sample),
        "width": sample.width,
        "height": sample.height,
        "modality": sample.modality,
        "source": sample.source,
        "case": pseudonym(sample.case) if sample.case and sample.meta.get("case_from") else sample.case,
        "split": split,
        "plane": sample.plane,
        "body_region": sample.body_region,
        "dialect": dialect,
        "tasks": [t.task for t in turns],
        "conversations": conversations,
        "turns": [
            {"task": t.task, "structure": t.structure, "regions": list(t.regions), "negative": t.negative}
            for t in turns
        ],
        "regions": regions,
        "negative_rule": negative_rule,
    }


def save_sample(
    out_dir: Path, sample: Sample, regions: list[Region], masks: str = "png", keep_metadata: bool = False
) -> None:
    """Write the image (a copy of its file when stored display-ready, without its EXIF/XMP/PNG text unless
    ``keep_metadata``, else PNG) and, for ``masks="png"``, one 0/255 PNG per region (``"rle"``: the masks
    are in the records; no mask file is written).

    Not fsynced one by one: the build's shard commit mark is written after them (see engine). One
    thread: writer threads measured slower (GIL hand-offs, and file creation here costs CPU, not waiting).
    """
    target = out_dir / image_path(sample)
    if "file" in sample.meta:
        copy_image(sample.meta["file"], target, keep_metadata=keep_metadata, durable=False)
    else:
        write_png(target, np.asarray(sample.image), durable=False, fast=True)
    if masks != "png":
        return
    (out_dir / "masks" / sample.id).mkdir(parents=True, exist_ok=True)

    root = str(out_dir)
    for region, mask in zip(regions, mask_paths(sample, regions), strict=True):
        write_mask_png(
            f"{root}/{mask}",
            region.mask,
            top=region.box.y0,
            left=region.box.x0,
            height=sample.height,
            width=sample.width,
            durable=False,
        )
