"""Parquet and WebDataset shards that carry everything a sample needs: image bytes, turns, masks.

A sample is ``{"key", "id", "split", "dialect", "width", "height", "image", "conversations", "record"}``:
``key`` is its index in the export (``%06d``); ``image`` the name of its image inside the shard
(``KEY.png`` / ``KEY.jpg``: the tar member, the Parquet image's ``path``); ``width`` x ``height`` the
size of the image carried (the build's own bytes, or a PNG resized for a pixel-frame dialect);
``conversations`` the LLaVA turns in the target dialect; ``record`` the build's record *in the carried
image's frame*: its ``image`` is the key's name, each region's ``box`` and ``area`` are in the carried
frame and its mask is carried as COCO RLE (``rle``) of that frame (no path back to the build); the build's
own frame is kept under ``original`` (``image``, ``width``, ``height``, ``boxes``: one per region).

Parquet rows hold ``record`` as a JSON string and the image in an HF ``Image`` column; the file's
``huggingface`` schema metadata uses only feature types HF datasets 3.0 knows (lists as ``[feature]``,
no ``List``), so ``load_dataset("parquet")`` of datasets >= 3.0 decodes the images. Memory is bounded by
one record, its image and one row group (at most ``PARQUET_ROW_GROUP_ROWS`` rows / ``PARQUET_ROW_GROUP_BYTES``
bytes); tarfile also keeps each member's header of the open shard (about 7 MB per 10,000 samples).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from medground.data.export.common import (
    ExportOptions,
    FrameStats,
    Rendered,
    image_bytes,
    iter_records,
    render,
)
from medground.grounding import scale_box
from medground.io import encode_rle, region_mask
from medground.types import Box

__all__ = ["DEFAULT_SHARD_SIZE", "PARQUET_FEATURES", "SHARDED_FORMATS", "export_shards", "samples"]

SHARDED_FORMATS = {"parquet": ".parquet", "webdataset": ".tar"}  # name -> shard suffix
DEFAULT_SHARD_SIZE = 10_000  # samples per shard
# HF datasets writes image datasets in row groups of 100 rows (config.PARQUET_ROW_GROUP_SIZE_FOR_IMAGE_DATASETS);
# the byte cap keeps a row group of large images small too
PARQUET_ROW_GROUP_ROWS = 100
PARQUET_ROW_GROUP_BYTES = 64 * 2**20
_TEXT = {"dtype": "string", "_type": "Value"}
# HF datasets Features of a Parquet row, as datasets 3.0 serialises them (a list of structs is ``[{...}]``)
PARQUET_FEATURES: dict[str, Any] = {
    "key": _TEXT,
    "id": _TEXT,
    "split": _TEXT,
    "dialect": _TEXT,
    "width": {"dtype": "int32", "_type": "Value"},
    "height": {"dtype": "int32", "_type": "Value"},
    "image": {"_type": "Image"},
    "conversations": [{"from": _TEXT, "value": _TEXT}],
    "record": _TEXT,
}


def _sampled(mask: np.ndarray, box: Box, size: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """The part of ``mask`` (H, W) inside ``box`` after a nearest-neighbour resize to ``size`` (width,
    height; carried pixel i takes source pixel floor((i + 0.5) * H / h)), as (crop, top, left) in the
    carried frame: only the carried rows and columns that sample the box are computed."""
    height, width = mask.shape
    ys = np.floor((np.arange(size[1]) + 0.5) * height / size[1]).astype(int)
    xs = np.floor((np.arange(size[0]) + 0.5) * width / size[0]).astype(int)
    rows = np.flatnonzero((ys >= box.y0) & (ys < box.y1))
    cols = np.flatnonzero((xs >= box.x0) & (xs < box.x1))
    if not len(rows) or not len(cols):
        return np.zeros((0, 0), bool), 0, 0
    return mask[np.ix_(ys[rows], xs[cols])], int(rows[0]), int(cols[0])


def _carried_region(region: dict, root: Path, record: dict, size: tuple[int, int], resized: bool) -> dict:
    """One region in the carried frame: its mask as RLE of that frame, its box the carried mask's box
    (the scaled box where resizing leaves no pixel of it), its area the carried mask's pixels."""
    row = {k: v for k, v in region.items() if k != "mask"}
    if not resized and region.get("rle") is not None and region.get("area") is not None:
        return row  # an RLE build, kept as it is
    box = Box.from_list(region["box"])
    mask = region_mask(root, region, root / record["image"])
    if resized:
        crop, top, left = _sampled(mask, box, size)
    else:
        crop, top, left = mask[box.y0 : box.y1, box.x0 : box.x1], box.y0, box.x0
    rle = encode_rle(crop, top=top, left=left, height=size[1], width=size[0])
    rows, cols = np.flatnonzero(crop.any(1)), np.flatnonzero(crop.any(0))
    if len(rows):
        carried = Box(
            left + int(cols[0]), top + int(rows[0]), left + int(cols[-1]) + 1, top + int(rows[-1]) + 1
        )
    else:
        sx, sy = size[0] / mask.shape[1], size[1] / mask.shape[0]
        carried = scale_box(box, sx, sy, size[0], size[1])
    return {**row, "box": carried.as_list(), "area": int(crop.sum()), "rle": rle}


def _carried_record(item: Rendered, root: Path, name: str) -> dict:
    """``item.record`` in the frame of the image carried as ``name``: each region's mask as RLE of that
    frame, its box and area those of the carried mask, the build's frame under ``original``."""
    record = item.record
    regions = [_carried_region(r, root, record, item.size, item.resized) for r in record.get("regions") or []]
    original = {
        "image": record["image"],
        "width": record["width"],
        "height": record["height"],
        "boxes": [region["box"] for region in record.get("regions") or []],
    }
    width, height = item.size
    return {
        **record,
        "image": name,
        "width": width,
        "height": height,
        "regions": regions,
        "original": original,
    }


def samples(
    root: Path, split: str | None, options: ExportOptions, stats: FrameStats
) -> Iterator[tuple[dict, bytes]]:
    """Stream (sample, image bytes) per record of build ``root`` (see the module docstring); each carried
    image's size is added to ``stats``."""
    warned: list[str] = []
    for index, record in enumerate(iter_records(root, split)):
        item = render(record, root, options, warned)
        key = f"{index:06d}"
        name = key + item.rel.suffix.lower()
        stats.add(item.size)
        sample = {
            "key": key,
            "id": record["id"],
            "split": record.get("split"),
            "dialect": item.target.name,
            "width": item.size[0],
            "height": item.size[1],
            "image": name,
            "conversations": item.conv,
            "record": _carried_record(item, root, name),
        }
        yield sample, image_bytes(item, options.keep_metadata)


@contextmanager
def _parquet_shard(path: Path) -> Iterator[Callable[[dict, bytes], None]]:
    """A writer of one Parquet shard (pyarrow), flushing a row group when it holds PARQUET_ROW_GROUP_ROWS
    rows or PARQUET_ROW_GROUP_BYTES image bytes; the schema carries HF datasets' ``huggingface`` metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = pa.string()
    turn = pa.struct([("from", text), ("value", text)])
    image = pa.struct([("bytes", pa.binary()), ("path", text)])
    fields = [(k, text) for k in ("key", "id", "split", "dialect")] + [
        ("width", pa.int32()),
        ("height", pa.int32()),
    ]
    schema = pa.schema(
        [*fields, ("image", image), ("conversations", pa.list_(turn)), ("record", text)],
        metadata={"huggingface": json.dumps({"info": {"features": PARQUET_FEATURES}})},
    )
    rows: list[dict] = []
    buffered = 0
    with pq.ParquetWriter(str(path), schema) as writer:

        def flush() -> None:
            nonlocal buffered
            if rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                rows.clear()
                buffered = 0

        def write(sample: dict, data: bytes) -> None:
            nonlocal buffered
            rows.append(
                {
                    **sample,
                    "image": {"bytes": data, "path": sample["image"]},
                    "record": json.dumps(sample["record"], ensure_ascii=False),
                }
            )
            buffered += len(data)
            if len(rows) >= PARQUET_ROW_GROUP_ROWS or buffered >= PARQUET_ROW_GROUP_BYTES:
                flush()

        yield write
        flush()


@contextmanager
def _tar_shard(path: Path) -> Iterator[Callable[[dict, bytes], None]]:
    """A writer of one WebDataset tar shard: ``KEY.png|jpg`` (the image bytes) then ``KEY.json`` (the
    sample); members carry a fixed mtime, owner and mode so that the same export gives the same bytes."""

    def member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:

        def write(sample: dict, data: bytes) -> None:
            member(tar, sample["image"], data)
            member(tar, sample["key"] + ".json", json.dumps(sample, ensure_ascii=False).encode("utf-8"))

        yield write


def export_shards(
    root: Path, fmt: str, folder: Path, split: str | None, options: ExportOptions, shard_size: int
) -> FrameStats:
    """Write ``shard-NNNNNN<suffix>`` files of ``shard_size`` samples into a staging folder beside
    ``folder``, then swap them in for its old shards; return the carried images' count and pixel range. Shards are created with the umask's mode."""
    suffix = SHARDED_FORMATS[fmt]
    shard = _parquet_shard if fmt == "parquet" else _tar_shard
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        stats = FrameStats()
        stream = samples(root, split, options, stats)
        for index in itertools.count():
            first = list(itertools.islice(stream, 1))  # the shard's first sample, if any is left
            if not first:
                break
            with shard(staging / f"shard-{index:06d}{suffix}") as write:
                for sample in itertools.chain(first, itertools.islice(stream, shard_size - 1)):
                    write(*sample)
        written = sorted(staging.iterdir())
        if not written:
            raise ValueError(f"no records with split {split!r} in {root / 'records'}; check the split name")
        folder.mkdir(exist_ok=True)
        for old in folder.glob(f"shard-*{suffix}"):
            old.unlink()
        for new in written:
            os.replace(new, folder / new.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return stats
