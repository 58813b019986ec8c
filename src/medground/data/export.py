"""Export the data engine's records to the training formats of common fine-tuning tools.

| format       | file                     | item                                                                    | image path            |
|--------------|--------------------------|-------------------------------------------------------------------------|-----------------------|
| llava        | JSON list                | ``{"id", "image", "conversations": [{"from": "human"/"gpt", "value"}]}`` | relative to the dataset root (LLaVA ``image_folder``) |
| sharegpt     | JSONL                    | ``{"messages": [{"role": "user"/"assistant", "content"}], "images": [path]}`` | relative to the dataset root |
| llamafactory | JSONL + dataset_info.json | as sharegpt, plus an entry ``medground[_<split>]`` in ``dataset_info.json`` | relative to the export folder (LLaMA-Factory ``dataset_dir``/``media_dir``) |
| swift        | JSONL                    | ``{"messages": [...], "images": [path]}`` (ms-swift standard format)     | absolute              |

Every format keeps exactly one ``<image>`` placeholder in the first user turn (added in front when a
record lacks it). Box strings stay in the record's dialect. Records are streamed, files are written
under a temporary name and renamed. ``load_hf_dataset`` loads the records themselves with HF datasets.
"""

from __future__ import annotations

import difflib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["EXPORTERS", "export", "iter_records", "load_hf_dataset", "record_features", "shard_paths"]

IMAGE_TOKEN = "<image>"
ROLES = {"human": "user", "gpt": "assistant"}


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


def _messages(record: dict) -> list[dict[str, str]]:
    return [{"role": ROLES[t["from"]], "content": t["value"]} for t in _conversation(record)]


def _llava(record: dict, root: Path, dest: Path) -> dict:
    return {"id": record["id"], "image": record["image"], "conversations": _conversation(record)}


def _sharegpt(record: dict, root: Path, dest: Path) -> dict:
    return {"messages": _messages(record), "images": [record["image"]]}


def _llamafactory(record: dict, root: Path, dest: Path) -> dict:
    image = os.path.relpath(root / record["image"], dest.parent)
    return {"messages": _messages(record), "images": [Path(image).as_posix()]}


def _swift(record: dict, root: Path, dest: Path) -> dict:
    return {"messages": _messages(record), "images": [str((root / record["image"]).resolve())]}


# name -> (item builder(record, dataset root, destination file), file suffix)
EXPORTERS: dict[str, tuple[Callable[[dict, Path, Path], dict], str]] = {
    "llava": (_llava, ".json"),
    "sharegpt": (_sharegpt, ".jsonl"),
    "llamafactory": (_llamafactory, ".jsonl"),
    "swift": (_swift, ".jsonl"),
}


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


def _get_exporter(fmt: str) -> tuple[Callable[[dict, Path, Path], dict], str]:
    if fmt in EXPORTERS:
        return EXPORTERS[fmt]
    close = difflib.get_close_matches(fmt, list(EXPORTERS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise KeyError(f"unknown export format {fmt!r}; known: {', '.join(EXPORTERS)}.{hint}")


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


def export(out_dir: Path, fmt: str, dest: Path | None = None, split: str | None = None) -> Path:
    """Write the records of build folder ``out_dir`` in format ``fmt`` (a key of EXPORTERS); return the data file.

    ``dest``: a file, or a folder that gets the default name (``<fmt>[_<split>].json(l)``; llamafactory:
    ``medground[_<split>].jsonl`` beside its ``dataset_info.json``). Default: ``out_dir/export/`` (llamafactory:
    ``out_dir/export/llamafactory/``, pass that folder as LLaMA-Factory's ``dataset_dir``).
    ``split``: only records of that split. Raises KeyError for an unknown format, ValueError when no record matches.
    """
    builder, suffix = _get_exporter(fmt)
    root = Path(out_dir)
    path = _destination(root, fmt, dest, split, suffix)
    with _atomic(path) as f:
        items = (builder(rec, root, path) for rec in iter_records(root, split))
        count = _write_items(items, f, as_list=(fmt == "llava"))
        if count == 0:
            raise ValueError(f"no records with split {split!r} in {root / 'records'}; check the split name")
    if fmt == "llamafactory":
        _write_dataset_info(path, split)
    return path


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
