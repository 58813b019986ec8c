"""Export the data engine's records to the training formats of common fine-tuning tools, in any dialect.

| format       | file                      | item                                                                          |
|--------------|---------------------------|-------------------------------------------------------------------------------|
| llava        | JSON list                 | ``{"id", "image", "conversations": [{"from": "human"/"gpt", "value"}]}``      |
| sharegpt     | JSONL                     | ``{"messages": [{"role": "user"/"assistant", "content"}], "images": [path]}`` |
| llamafactory | JSONL + dataset_info.json | as sharegpt, plus an entry ``medground[_<split>]`` in ``dataset_info.json``   |
| swift        | JSONL                     | ``{"messages": [...], "images": [path]}`` (ms-swift standard format)          |
| parquet      | ``shard-NNNNNN.parquet``  | a row per record: its sample (below), image bytes in an HF ``Image`` column   |
| webdataset   | ``shard-NNNNNN.tar``      | ``KEY.png`` (or ``.jpg``: the image's bytes) + ``KEY.json`` (its sample)      |

Every image path is relative to the export file's folder and the image lies inside that folder (hard
linked from the build when possible, else copied), so the folder can be moved: LLaVA's ``image_folder``,
LLaMA-Factory's ``dataset_dir``/``media_dir`` (its default) and ms-swift's working directory or
``ROOT_IMAGE_DIR`` are that folder. Every format keeps exactly one ``<image>`` placeholder, in the first
user turn (added in front when a record lacks it).

Boxes are re-rendered from the records' canonical boxes in the chosen dialect (default: the record's):
each box span of the record's dialect is parsed, snapped to its region's canonical box and written in the
target dialect, so LLM-rewritten turns convert too. For a pixel-frame dialect (qwen2.5-vl) each image is
saved at the dialect's ``fixed_size`` within ``max_pixels`` (default 768 x 768, LLaMA-Factory's default
``image_max_pixels``; below ms-swift's common ``MAX_PIXELS=1003520`` and Qwen's own 12,845,056), so
neither the trainer's resize nor the model's changes it and the box numbers are pixels of the fed image.
Records are streamed, files are written under a temporary name and renamed. ``load_hf_dataset`` loads the
records themselves with HF datasets.

The sharded formats carry the images inside the shards, for training at scale (streamed from object
stores, no small files). A sample is ``{"key", "id", "split", "dialect", "width", "height", "image",
"conversations", "record"}``: ``key`` is its index in the export (``%06d``), ``width`` x ``height`` the
size of the image bytes it carries (the build's own bytes, or a PNG resized as above), ``image`` that
image's path as the one-file formats would write it, ``conversations`` the LLaVA turns in the target
dialect and ``record`` the build's record unchanged (a JSON string in Parquet). Memory is bounded by one
record, its image and (Parquet) one row group: records are streamed, each shard is written as its samples
arrive (a tar member or a row group of at most ``PARQUET_ROW_GROUP_ROWS`` rows / ``PARQUET_ROW_GROUP_BYTES``
bytes at a time), and only the shard count is kept; tarfile also keeps each member's header of the open
shard (about 7 MB per 10,000 samples, measured), freed when the shard closes.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import tarfile
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from PIL import Image

from medground.choices import unknown_choice
from medground.grounding import Dialect, get_dialect, reground_text, scale_box
from medground.types import Box

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_SHARD_SIZE",
    "EXPORTERS",
    "SHARDED_FORMATS",
    "export",
    "iter_records",
    "load_hf_dataset",
    "parquet_features",
    "record_features",
    "shard_paths",
]

IMAGE_TOKEN = "<image>"
ROLES = {"human": "user", "gpt": "assistant"}
DEFAULT_MAX_PIXELS = 768 * 768  # LLaMA-Factory's default image_max_pixels (hparams/model_args.py)
SHARDED_FORMATS = {"parquet": ".parquet", "webdataset": ".tar"}  # name -> shard suffix
DEFAULT_SHARD_SIZE = 10_000  # samples per shard
# HF datasets writes image datasets in row groups of 100 rows (config.PARQUET_ROW_GROUP_SIZE_FOR_IMAGE_DATASETS);
# the byte cap keeps a row group of large images small too
PARQUET_ROW_GROUP_ROWS = 100
PARQUET_ROW_GROUP_BYTES = 64 * 2**20
QWEN_VL_WARNING = (
    "exporting boxes in the qwen-vl dialect (<ref>/<box> tags): right for Qwen-VL (BiRD), but Qwen2-VL, "
    "Qwen2.5-VL and Qwen3-VL templates read these tags as plain characters; pass --dialect qwen2-vl, "
    "qwen2.5-vl or qwen3-vl for those models"
)


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


def _conversation(record: dict) -> list[dict]:
    """The record's turns with exactly one ``<image>`` placeholder, in the first human turn."""
    conv = [dict(turn) for turn in record["conversations"]]
    for i, turn in enumerate(conv):
        value = turn["value"]
        if i == 0:
            if value.count(IMAGE_TOKEN) != 1:
                value = IMAGE_TOKEN + "\n" + value.replace(IMAGE_TOKEN, "").lstrip("\n")
        else:
            value = value.replace(IMAGE_TOKEN, "")
        turn["value"] = value
    return conv


def _messages(conv: list[dict]) -> list[dict[str, str]]:
    return [{"role": ROLES[t["from"]], "content": t["value"]} for t in conv]


def _llava(record: dict, image: str, conv: list[dict]) -> dict:
    return {"id": record["id"], "image": image, "conversations": conv}


def _chat(record: dict, image: str, conv: list[dict]) -> dict:
    return {"messages": _messages(conv), "images": [image]}


# name -> (item builder(record, image path relative to the export file's folder, conversation), file suffix)
EXPORTERS: dict[str, tuple[Callable[[dict, str, list[dict]], dict], str]] = {
    "llava": (_llava, ".json"),
    "sharegpt": (_chat, ".jsonl"),
    "llamafactory": (_chat, ".jsonl"),
    "swift": (_chat, ".jsonl"),
}


def _regrounded(
    conv: list[dict], record: dict, source: Dialect, target: Dialect, size: tuple[int, int]
) -> None:
    """Rewrite every turn's boxes (in place) from the record's dialect to ``target`` for an image of ``size``.

    Each turn's boxes snap first to the regions that turn names, then to any region of the record.
    """
    width, height = int(record["width"]), int(record["height"])
    resized = size != (width, height)
    if source == target and not resized:
        return  # reground_text would return every turn unchanged; skip parsing the regions' boxes
    regions = [Box.from_list(r["box"]) for r in record.get("regions") or []]
    turns = record.get("turns") or []
    sx, sy = size[0] / width, size[1] / height

    def move(box: Box) -> Box:
        return scale_box(box, sx, sy, size[0], size[1])

    for i, turn in enumerate(conv):
        named = turns[i // 2].get("regions", []) if i // 2 < len(turns) else []
        exact = [regions[j] for j in named if 0 <= j < len(regions)] + regions
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


def _resized(src: Path, size: tuple[int, int]) -> Image.Image | None:
    """The build's image ``src`` resized to ``size`` (width, height; Lanczos), or None when that is its size."""
    with Image.open(src) as image:
        if image.size == size:
            return None
        rgb = image if image.mode in ("L", "RGB") else image.convert("RGB")
        return rgb.resize(size, Image.Resampling.LANCZOS)


def _place_image(src: Path, dst: Path, size: tuple[int, int]) -> None:
    """Put the build's image ``src`` at ``dst``: a hard link (else a copy) when ``size`` is its own, else resized.

    ``size`` is (width, height); a resized image is written as PNG (lossless) under a temporary name first.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and dst.samefile(src):
        return
    resized = _resized(src, size)
    if resized is None:
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.stem}.", suffix=".png", dir=dst.parent)
    os.close(fd)
    try:
        resized.save(tmp, format="PNG")
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _rendered(
    record: dict, root: Path, target_name: str | None, max_pixels: int, warned: list[str]
) -> tuple[Path, Path, tuple[int, int], list[dict], Dialect]:
    """One record in the target dialect: (build image, its path relative to an export folder, the
    (width, height) to save it at, the conversation, the target dialect)."""
    source = get_dialect(record.get("dialect") or "qwen-vl")
    target = get_dialect(target_name) if target_name else source
    if target.name == "qwen-vl" and not warned:
        warnings.warn(QWEN_VL_WARNING, stacklevel=4)
        warned.append(target.name)
    width, height = int(record["width"]), int(record["height"])
    size = target.fixed_size(width, height, max_pixels)
    rel = Path(record["image"])
    if size != (width, height):
        rel = Path(f"images_{target.name}_{max_pixels}px", *rel.parts[1:]).with_suffix(".png")
    src = root / record["image"]
    if not src.is_file():
        raise FileNotFoundError(f"{src}: image of record {record.get('id')!r} is missing; rebuild {root}")
    conv = _conversation(record)
    _regrounded(conv, record, source, target, size)
    return src, rel, size, conv, target


def _item_inputs(
    record: dict, root: Path, folder: Path, target_name: str | None, max_pixels: int, warned: list[str]
) -> tuple[str, list[dict]]:
    """(image path relative to ``folder``, conversation in the target dialect) of one record; places the image."""
    src, rel, size, conv, _ = _rendered(record, root, target_name, max_pixels, warned)
    _place_image(src, folder / rel, size)
    return rel.as_posix(), conv


@contextmanager
def _atomic(path: Path) -> Iterator[IO[str]]:
    """Open a temporary file beside ``path``; it replaces ``path`` only when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_format(fmt: str) -> None:
    known = [*EXPORTERS, *SHARDED_FORMATS]
    if fmt in known:
        return
    raise KeyError(unknown_choice("export format", fmt, known))


def _destination(out_dir: Path, fmt: str, dest: Path | None, split: str | None, suffix: str) -> Path:
    """The data file to write: ``dest`` itself, or a default name inside ``dest`` (a folder) or out_dir/export."""
    name = f"{'medground' if fmt == 'llamafactory' else fmt}{'_' + split if split else ''}{suffix}"
    if dest is None:
        folder = out_dir / "export" / fmt if fmt == "llamafactory" else out_dir / "export"
        return folder / name
    dest = Path(dest)
    if dest.is_dir() or dest.suffix == "":
        return dest / name
    return dest


def _write_items(items: Iterable[dict], f: IO[str], as_list: bool) -> int:
    count = 0
    if as_list:
        f.write("[")
    for item in items:
        text = json.dumps(item, ensure_ascii=False)
        if as_list:
            f.write(("\n" if count == 0 else ",\n") + text)
        else:
            f.write(text + "\n")
        count += 1
    if as_list:
        f.write("\n]\n")
    return count


def _write_dataset_info(data_file: Path, split: str | None) -> Path:
    """Add (or replace) this export's entry in ``dataset_info.json`` beside the data file."""
    info_path = data_file.parent / "dataset_info.json"
    info: dict[str, Any] = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
    info[f"medground{'_' + split if split else ''}"] = {
        "file_name": data_file.name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
        },
    }
    with _atomic(info_path) as f:
        f.write(json.dumps(info, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    return info_path


def export(
    out_dir: Path,
    fmt: str,
    dest: Path | None = None,
    split: str | None = None,
    dialect: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    shard_size: int | None = None,
) -> Path:
    """Write the records of build folder ``out_dir`` in format ``fmt``; return the data file (or shard folder).

    ``dest``: a file, or a folder that gets the default name (``<fmt>[_<split>].json(l)``; llamafactory:
    ``medground[_<split>].jsonl`` beside its ``dataset_info.json``). Default: ``out_dir/export/`` (llamafactory:
    ``out_dir/export/llamafactory/``, pass that folder as LLaMA-Factory's ``dataset_dir``). Images go into
    the data file's folder. ``split``: only records of that split. ``dialect``: write boxes in this dialect
    (default: each record's own); ``max_pixels``: the pixel budget of images saved for a pixel-frame
    dialect. Warns when boxes are written in ``qwen-vl`` tags.

    A sharded format (a key of SHARDED_FORMATS) writes ``shard-NNNNNN.parquet`` / ``.tar`` files of
    ``shard_size`` samples (default DEFAULT_SHARD_SIZE) into ``dest`` (a folder; default
    ``out_dir/export/<fmt>[_<split>]/``), replacing the shards there only once all are written.

    Raises KeyError for an unknown format or dialect, ValueError when no record matches, ``max_pixels``
    is too small or ``shard_size`` is given for a one-file format or is below 1, FileNotFoundError for a
    missing image.
    """
    _check_format(fmt)
    if dialect is not None:
        get_dialect(dialect)
    if max_pixels < 28 * 28 * 4:
        raise ValueError(f"max_pixels must be at least {28 * 28 * 4} (a 56 x 56 image), got {max_pixels}")
    root = Path(out_dir)
    if fmt in SHARDED_FORMATS:
        size = DEFAULT_SHARD_SIZE if shard_size is None else shard_size
        if size < 1:
            raise ValueError(f"shard_size must be at least 1 sample, got {size}")
        return _export_shards(root, fmt, dest, split, dialect, max_pixels, size)
    if shard_size is not None:
        raise ValueError(f"shard_size applies to {' and '.join(SHARDED_FORMATS)} only, not to {fmt!r}")
    builder, suffix = EXPORTERS[fmt]
    path = _destination(root, fmt, dest, split, suffix)
    folder = path.parent
    warned: list[str] = []
    with _atomic(path) as f:
        items = (
            builder(rec, *_item_inputs(rec, root, folder, dialect, max_pixels, warned))
            for rec in iter_records(root, split)
        )
        count = _write_items(items, f, as_list=(fmt == "llava"))
        if count == 0:
            raise ValueError(f"no records with split {split!r} in {root / 'records'}; check the split name")
    if fmt == "llamafactory":
        _write_dataset_info(path, split)
    return path


def _samples(
    root: Path, split: str | None, dialect: str | None, max_pixels: int
) -> Iterator[tuple[dict, bytes, str]]:
    """Stream (sample, image bytes, image suffix) per record of ``root``: the build's own bytes, or a PNG
    of the image resized for a pixel-frame dialect."""
    warned: list[str] = []
    for index, record in enumerate(iter_records(root, split)):
        src, rel, size, conv, target = _rendered(record, root, dialect, max_pixels, warned)
        # the record's width x height is its image's (as for the path ``_rendered`` chose): no need to open it
        resized = None if size == (record["width"], record["height"]) else _resized(src, size)
        if resized is None:
            data = src.read_bytes()
        else:
            buffer = io.BytesIO()
            resized.save(buffer, format="PNG")
            data = buffer.getvalue()
        sample = {
            "key": f"{index:06d}",
            "id": record["id"],
            "split": record.get("split"),
            "dialect": target.name,
            "width": size[0],
            "height": size[1],
            "image": rel.as_posix(),
            "conversations": conv,
            "record": record,
        }
        yield sample, data, rel.suffix.lower()


def parquet_features() -> Any:
    """HF datasets Features of a Parquet export's rows (``image`` decodes to a PIL image; ``record`` is JSON)."""
    from datasets import Features, Image, List, Value

    text = Value("string")
    return Features(
        {
            "key": text,
            "id": text,
            "split": text,
            "dialect": text,
            "width": Value("int32"),
            "height": Value("int32"),
            "image": Image(),
            "conversations": List({"from": text, "value": text}),
            "record": text,
        }
    )


@contextmanager
def _parquet_shard(path: Path) -> Iterator[Callable[[dict, bytes, str], None]]:
    """A writer of one Parquet shard through HF datasets' ParquetWriter (its ``huggingface`` schema metadata
    makes ``load_dataset("parquet")`` decode the image column), flushing row groups as they fill."""
    from datasets.arrow_writer import ParquetWriter

    features = parquet_features()
    writer = ParquetWriter(features=features, path=str(path), writer_batch_size=PARQUET_ROW_GROUP_ROWS)
    buffered = 0

    def write(sample: dict, data: bytes, suffix: str) -> None:
        nonlocal buffered
        row = {**sample, "image": {"bytes": data, "path": sample["image"]}}
        row["record"] = json.dumps(sample["record"], ensure_ascii=False)
        writer.write(features.encode_example(row))
        buffered += len(data)
        if buffered >= PARQUET_ROW_GROUP_BYTES:
            writer.write_examples_on_file()
            buffered = 0
        elif not writer.current_examples:  # the writer flushed a full row group itself
            buffered = 0

    try:
        yield write
    except BaseException:
        writer.stream.close()
        raise
    writer.finalize()


@contextmanager
def _tar_shard(path: Path) -> Iterator[Callable[[dict, bytes, str], None]]:
    """A writer of one WebDataset tar shard: ``KEY<suffix>`` (the image bytes) then ``KEY.json`` (the sample);
    members carry a fixed mtime, owner and mode so that the same export gives the same bytes."""

    def member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:

        def write(sample: dict, data: bytes, suffix: str) -> None:
            member(tar, sample["key"] + suffix, data)
            member(tar, sample["key"] + ".json", json.dumps(sample, ensure_ascii=False).encode("utf-8"))

        yield write


def _export_shards(
    root: Path,
    fmt: str,
    dest: Path | None,
    split: str | None,
    dialect: str | None,
    max_pixels: int,
    shard_size: int,
) -> Path:
    """Write ``shard-NNNNNN<suffix>`` files of ``shard_size`` samples into a staging folder beside the
    destination, then swap them in for its old shards; return the destination folder."""
    suffix = SHARDED_FORMATS[fmt]
    shard = _parquet_shard if fmt == "parquet" else _tar_shard
    folder = Path(dest) if dest is not None else root / "export" / f"{fmt}{'_' + split if split else ''}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        samples = _samples(root, split, dialect, max_pixels)
        for index in itertools.count():
            first = list(itertools.islice(samples, 1))  # the shard's first sample, if any is left
            if not first:
                break
            with shard(staging / f"shard-{index:06d}{suffix}") as write:
                for sample in itertools.chain(first, itertools.islice(samples, shard_size - 1)):
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
    return folder


def record_features() -> Any:
    """HF datasets Features of one record (the schema in the data engine's docs)."""
    from datasets import Features, List, Value

    text = Value("string")
    return Features(
        {
            "id": text,
            "image": text,
            "width": Value("int32"),
            "height": Value("int32"),
            "modality": text,
            "source": text,
            "case": text,
            "split": text,
            "plane": text,
            "body_region": text,
            "dialect": text,
            "tasks": List(text),
            "conversations": List({"from": text, "value": text}),
            "turns": List(
                {"task": text, "structure": text, "regions": List(Value("int32")), "negative": Value("bool")}
            ),
            "regions": List(
                {
                    "name": text,
                    "key": text,
                    "box": List(Value("int32")),
                    "mask": text,
                    "rle": {"size": List(Value("int32")), "counts": text},
                    "instance": Value("int32"),
                    "area": Value("int64"),
                    "position": text,
                }
            ),
        }
    )


def _features_for(paths: list[Path]) -> Any:
    """Known fields get fixed types (so all-null or empty columns load); unknown top-level keys are inferred."""
    import pyarrow as pa
    from datasets import Features, Value

    features = record_features()
    sample: list[dict] = []
    for path in paths:  # the first 200 records decide the types of unknown keys
        with open(path, encoding="utf-8") as f:
            sample.extend(
                json.loads(line) for line, _ in zip(f, range(200 - len(sample)), strict=False) if line.strip()
            )
        if len(sample) >= 200:
            break
    extra = sorted({key for rec in sample for key in rec} - set(features))
    if extra:
        inferred = Features.from_arrow_schema(
            pa.Table.from_pylist([{k: r.get(k) for k in extra} for r in sample]).schema
        )
        for key in extra:
            features[key] = Value("string") if inferred[key] == Value("null") else inferred[key]
    return features


def load_hf_dataset(out_dir: Path, split: str | None = None, cache_dir: Path | None = None) -> Any:
    """The records of build folder ``out_dir`` as a ``datasets.Dataset`` (one row per record).

    ``split``: keep only rows of that split. ``cache_dir``: HF datasets cache (default: its own default).
    """
    from datasets import load_dataset

    paths = shard_paths(out_dir)
    ds = load_dataset(
        "json",
        data_files=[str(p) for p in paths],
        split="train",
        features=_features_for(paths),
        cache_dir=str(cache_dir) if cache_dir else None,
    )
    if split is not None:
        ds = ds.filter(lambda s: s == split, input_columns="split")
    return ds
