"""What every export format shares: a build's records in, each rendered for one target dialect and frame.

A record is rendered as (build image, path in the export, the (width, height) it is saved at, its turns in
the target dialect). For a pixel-frame dialect (qwen2.5-vl) the image is saved at the dialect's
``fixed_size`` within ``max_pixels``, so a trainer whose pixel cap is at least that size feeds it
unchanged; grid dialects are relative to the image and keep it as it is. Images are read and written
through :mod:`medground.io`; their metadata (EXIF, XMP, PNG text) is dropped unless asked to keep it.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from medground.grounding import Dialect, get_dialect, reground_text, scale_box
from medground.io import atomic_write_bytes, encode_png, read_image
from medground.io.images import image_file_bytes
from medground.types import Box

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_TOKEN",
    "ExportOptions",
    "FrameStats",
    "Rendered",
    "export_dialect",
    "image_bytes",
    "iter_records",
    "place_image",
    "render",
    "shard_paths",
    "turn_regions",
]

IMAGE_TOKEN = "<image>"
BUILD_DIALECT = "qwen-vl-grid"  # of records that name none (built before records carried a dialect)
DEFAULT_MAX_PIXELS = 768 * 768  # LLaMA-Factory's default image_max_pixels (hparams/model_args.py)
QWEN_VL_WARNING = (
    "exporting boxes in the qwen-vl-grid dialect (<ref>/<box> tags): right for Qwen-VL (BiRD), but Qwen2-VL, "
    "Qwen2.5-VL and Qwen3-VL templates read these tags as plain characters; pass --dialect qwen2-vl-norm1000, "
    "qwen2.5-vl-pixels or qwen3-vl-norm1000 for those models"
)


@dataclass(frozen=True)
class ExportOptions:
    """How records are rendered, whatever the format."""

    dialect: str | None = None
    """Write boxes in this dialect (None: each record's own)."""
    max_pixels: int = DEFAULT_MAX_PIXELS
    """Pixel budget of images saved for a pixel-frame dialect (the trainer's cap must be at least this)."""
    system: str | None = None
    """A system prompt put in front of every conversation (None: the trainer's template default)."""
    keep_metadata: bool = False
    """Copy images with their EXIF/XMP/PNG text (default: dropped; they may name the patient)."""


@dataclass(frozen=True)
class Rendered:
    """One record for one target: ``size`` is the (width, height) its image is saved at; ``conv`` the
    LLaVA turns (``from`` human/gpt, one ``<image>`` in the first human turn) in ``target``'s dialect."""

    record: dict
    src: Path
    rel: Path
    size: tuple[int, int]
    conv: list[dict]
    target: Dialect

    @property
    def resized(self) -> bool:
        return self.size != (int(self.record["width"]), int(self.record["height"]))


@dataclass
class FrameStats:
    """Count and pixel range (width x height) of the images an export saved."""

    count: int = 0
    largest: int = 0
    smallest: int = 0

    def add(self, size: tuple[int, int]) -> None:
        pixels = size[0] * size[1]
        self.largest = max(self.largest, pixels)
        self.smallest = pixels if self.count == 0 else min(self.smallest, pixels)
        self.count += 1


def shard_paths(out_dir: Path) -> list[Path]:
    """Sorted ``out_dir/records/*.jsonl``; raises FileNotFoundError naming the folder when there are none."""
    paths = sorted((Path(out_dir) / "records").glob("*.jsonl"))
    if not paths:
        raise FileNotFoundError(
            f"no record shards in {Path(out_dir) / 'records'} (expected records/shard-*.jsonl); "
            "run `medground build SRC --out DIR` first and pass that DIR"
        )
    return paths


def iter_records(out_dir: Path, split: str | None = None) -> Iterator[dict]:
    """Stream the records of a build output folder in shard order, optionally only one split."""
    for path in shard_paths(out_dir):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{lineno} is not valid JSON ({err}); rebuild the shard") from err
                if split is None or record.get("split") == split:
                    yield record


def export_dialect(out_dir: Path, split: str | None, dialect: str | None) -> str:
    """The name of the dialect an export writes: ``dialect``, else the first record's (an old name gives
    its dialect's name now). ValueError when no record matches."""
    if dialect is None:
        first = next(iter_records(out_dir, split), None)
        if first is None:
            raise ValueError(
                f"no records with split {split!r} in {Path(out_dir) / 'records'}; check the split name"
            )
        dialect = first.get("dialect") or BUILD_DIALECT
    return get_dialect(dialect).name


def _conversation(record: dict, system: str | None) -> list[dict]:
    """The record's turns with exactly one ``<image>`` placeholder, in the first human turn; ``system``
    (if given) as a leading ``{"from": "system"}`` turn."""
    conv = [dict(turn) for turn in record["conversations"]]
    for i, turn in enumerate(conv):
        value = turn["value"]
        if i == 0:
            if value.count(IMAGE_TOKEN) != 1:
                value = IMAGE_TOKEN + "\n" + value.replace(IMAGE_TOKEN, "").lstrip("\n")
        else:
            value = value.replace(IMAGE_TOKEN, "")
        turn["value"] = value
    return [{"from": "system", "value": system}, *conv] if system else conv


def turn_regions(record: dict) -> list[list[Box]]:
    """Per conversation turn (system turn excluded), the canonical boxes it may denote: the regions its
    generator named first, then every region of the record (earlier ones win ties)."""
    regions = [Box.from_list(r["box"]) for r in record.get("regions") or []]
    turns = record.get("turns") or []
    out = []
    for i in range(len(record["conversations"])):
        named = turns[i // 2].get("regions", []) if i // 2 < len(turns) else []
        out.append([regions[j] for j in named if 0 <= j < len(regions)] + regions)
    return out


def _regrounded(
    conv: list[dict], record: dict, source: Dialect, target: Dialect, size: tuple[int, int]
) -> None:
    """Rewrite every turn's boxes (in place) from the record's dialect to ``target`` for an image of ``size``."""
    width, height = int(record["width"]), int(record["height"])
    resized = size != (width, height)
    if source == target and not resized:
        return
    sx, sy = size[0] / width, size[1] / height

    def move(box: Box) -> Box:
        return scale_box(box, sx, sy, size[0], size[1])

    offset = len(conv) - len(record["conversations"])  # a system turn in front
    for turn, exact in zip(conv[offset:], turn_regions(record), strict=True):
        turn["value"] = reground_text(
            turn["value"],
            source,
            target,
            width,
            height,
            exact,
            move if resized else None,
            size if resized else None,
        )


def render(
    record: dict, root: Path, options: ExportOptions, warned: list[str], *, as_built: bool = False
) -> Rendered:
    """``record`` of build ``root`` in the target dialect and frame of ``options`` (warns once, through
    ``warned``, when boxes are written as qwen-vl tags). ``as_built``: the image and the turns are kept
    as built (the target dialect is only named). Raises FileNotFoundError for a missing image."""
    source = get_dialect(record.get("dialect") or BUILD_DIALECT)
    target = get_dialect(options.dialect) if options.dialect else source
    if target.name == "qwen-vl-grid" and not warned and not as_built:
        warnings.warn(QWEN_VL_WARNING, stacklevel=4)
        warned.append(target.name)
    width, height = int(record["width"]), int(record["height"])
    size = (width, height) if as_built else target.fixed_size(width, height, options.max_pixels)
    rel = Path(record["image"])
    if size != (width, height):
        rel = Path(f"images_{target.name}_{options.max_pixels}px", *rel.parts[1:]).with_suffix(".png")
    src = root / record["image"]
    if not src.is_file():
        raise FileNotFoundError(f"{src}: image of record {record.get('id')!r} is missing; rebuild {root}")
    conv = _conversation(record, options.system)
    if not as_built:
        _regrounded(conv, record, source, target, size)
    return Rendered(record, src, rel, size, conv, target)


def _resized_png(src: Path, size: tuple[int, int]) -> bytes:
    """PNG bytes of the build's image ``src`` resized to ``size`` (width, height; Lanczos), no metadata."""
    array = read_image(src)
    resized = Image.fromarray(array).resize(size, Image.Resampling.LANCZOS)
    return encode_png(np.asarray(resized))


def image_bytes(item: Rendered, keep_metadata: bool) -> bytes:
    """The bytes of ``item``'s image as exported: resized PNG, else the build's file (metadata dropped
    unless ``keep_metadata``)."""
    if item.resized:
        return _resized_png(item.src, item.size)
    return image_file_bytes(item.src, keep_metadata=keep_metadata)


def place_image(item: Rendered, folder: Path, keep_metadata: bool) -> None:
    """Put ``item``'s image at ``folder / item.rel``: a hard link to the build's file when its bytes are
    the ones to export (no metadata, or ``keep_metadata``), else a file written atomically (umask mode)."""
    dst = folder / item.rel
    if dst.exists() and dst.samefile(item.src):
        return
    data = None if keep_metadata and not item.resized else image_bytes(item, keep_metadata)
    if data is None or (not item.resized and data == image_file_bytes(item.src, keep_metadata=True)):
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.unlink(missing_ok=True)
        try:
            os.link(item.src, dst)
            return
        except OSError:
            data = image_file_bytes(item.src, keep_metadata=True) if data is None else data
    atomic_write_bytes(dst, data, fsync=False)
