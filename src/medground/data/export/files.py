"""One-file exports: a JSON/JSONL data file whose image paths are relative to its folder.

| format        | file                         | item                                                                           |
|---------------|------------------------------|--------------------------------------------------------------------------------|
| llava         | JSON list                    | ``{"id", "image", "conversations": [{"from": "human"/"gpt", "value"}]}``       |
| sharegpt      | JSONL + dataset_info.json    | ``{"id", "messages": [{"role", "content"}], "images": [path]}``                |
| llamafactory  | JSONL + dataset_info.json    | as sharegpt (the folder is LLaMA-Factory's ``dataset_dir``)                    |
| swift         | JSONL                        | as sharegpt (ms-swift's standard format; boxes as text in the dialect)          |
| swift-objects | JSONL                        | ms-swift's grounding form: ``<ref-object>``/``<bbox>`` placeholders in the     |
|               |                              | turns, ``"objects": {"ref", "bbox", "bbox_type": "real"}``: swift rescales    |
| internvl      | JSONL + ``*_meta.json``      | ``{"id", "image", "width", "height", "conversations"}`` + InternVL's meta JSON |

``--system`` adds a system turn (``{"role": "system"}``); LLaVA and InternVL take theirs from the
conversation template instead (LLaVA's loader has no system role; InternVL's adds ``<image>`` to a first
turn without one, which a system turn would be), so the option is refused for those two.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from medground.data.export.common import (
    BUILD_DIALECT,
    ExportOptions,
    FrameStats,
    Rendered,
    iter_records,
    place_image,
    render,
    turn_regions,
)
from medground.grounding import Dialect, JsonDialect, get_dialect
from medground.io import atomic_output, atomic_write_json
from medground.types import Box

__all__ = ["EXPORTERS", "FILE_SUFFIXES", "check_pairing", "write_file_export"]

ROLES = {"system": "system", "human": "user", "gpt": "assistant"}
NO_SYSTEM_TURN = {"llava", "internvl"}


def _messages(conv: list[dict]) -> list[dict[str, str]]:
    return [{"role": ROLES[t["from"]], "content": t["value"]} for t in conv]


def _llava(item: Rendered, image: str) -> dict:
    return {"id": item.record["id"], "image": image, "conversations": item.conv}


def _chat(item: Rendered, image: str) -> dict:
    return {"id": item.record["id"], "messages": _messages(item.conv), "images": [image]}


def _internvl(item: Rendered, image: str) -> dict:
    """A row of InternVL's finetune data (``internvl_chat_finetune.py``): ``image`` is joined to the meta's
    ``root``; ``width``/``height`` are the image's as saved."""
    width, height = item.size
    return {
        "id": item.record["id"],
        "image": image,
        "width": width,
        "height": height,
        "conversations": item.conv,
    }


def _objects_layout(dialect: Dialect, label: str | None, count: int) -> str:
    """Placeholders for ``count`` boxes of one label: JSON dialects as Qwen's ``bbox_2d`` objects (swift's
    ``QWENVL_BBOX_FORMAT=new``), the others ``<ref-object><bbox>...`` (swift renders its own tags)."""
    if isinstance(dialect, JsonDialect):
        ref = ', "label": "<ref-object>"' if label is not None else ""
        items = [f'{{"bbox_2d": <bbox>{ref}}}' for _ in range(count)]
        return items[0] if count == 1 else "[" + ", ".join(items) + "]"
    return ("<ref-object>" if label is not None else "") + "<bbox>" * count


def _swift_objects(item: Rendered, image: str) -> dict:
    """ms-swift's grounding form: each box span of the record's own turns (``item`` rendered in the build's
    frame, not regrounded) becomes placeholders laid out for ``item.target``, and its boxes go to
    ``objects`` in the image's own pixels (``bbox_type: real``, x1/y1 exclusive edges); swift scales them
    to the frame it feeds the model (``Template.normalize_bbox``)."""
    record = item.record
    source = get_dialect(record.get("dialect") or BUILD_DIALECT)
    width, height = int(record["width"]), int(record["height"])
    json_layout = isinstance(item.target, JsonDialect)
    refs: list[str] = []
    boxes: list[list[int]] = []
    conv = [dict(turn) for turn in item.conv]
    offset = len(conv) - len(record["conversations"])
    for turn, exact in zip(conv[offset:], turn_regions(record), strict=True):
        snap: dict[Box, Box] = {}
        for box in exact:
            snap.setdefault(source.quantise(box, width, height), box)

        def replace(match: re.Match[str], snap: dict[Box, Box] = snap) -> str:
            found = source.parse(match.group(0), width, height)
            out = []
            for label, group in _by_label(found):
                if label is not None:
                    refs.extend([label] * (len(group) if json_layout else 1))
                boxes.extend(snap.get(b, b).as_list() for b in group)
                out.append(_objects_layout(item.target, label, len(group)))
            return " ".join(out) if found else match.group(0)

        turn["value"] = source.span_pattern.sub(replace, turn["value"])
    objects = {"ref": refs, "bbox": boxes, "bbox_type": "real"}
    return {"id": record["id"], "messages": _messages(conv), "images": [image], "objects": objects}


def _by_label(found: list) -> list[tuple[str | None, list[Box]]]:
    """Consecutive grounded boxes grouped by label, in order."""
    groups: list[tuple[str | None, list[Box]]] = []
    for g in found:
        if groups and groups[-1][0] == g.label:
            groups[-1][1].append(g.box)
        else:
            groups.append((g.label, [g.box]))
    return groups


# name -> (item builder(rendered record, image path relative to the data file's folder), file suffix)
EXPORTERS: dict[str, tuple[Callable[[Rendered, str], dict], str]] = {
    "llava": (_llava, ".json"),
    "sharegpt": (_chat, ".jsonl"),
    "llamafactory": (_chat, ".jsonl"),
    "swift": (_chat, ".jsonl"),
    "swift-objects": (_swift_objects, ".jsonl"),
    "internvl": (_internvl, ".jsonl"),
}
FILE_SUFFIXES = {name: suffix for name, (_, suffix) in EXPORTERS.items()}


def _write_items(items: Iterable[dict], f: IO[str], as_list: bool) -> None:
    if as_list:
        f.write("[")
    for count, item in enumerate(items):
        text = json.dumps(item, ensure_ascii=False)
        if as_list:
            f.write(("\n" if count == 0 else ",\n") + text)
        else:
            f.write(text + "\n")
    if as_list:
        f.write("\n]\n")


def _dataset_info(data_file: Path, name: str) -> Path:
    """Add (or replace) the entry ``name`` of LLaMA-Factory's ``dataset_info.json`` beside the data file."""
    info_path = data_file.parent / "dataset_info.json"
    info: dict[str, Any] = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
    info[name] = {
        "file_name": data_file.name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        },
    }
    atomic_write_json(info_path, dict(sorted(info.items())), fsync=False)
    return info_path


def _internvl_meta(data_file: Path, name: str, count: int) -> Path:
    """InternVL's meta JSON ``{name: {root, annotation, data_augment, repeat_time, length}}`` beside the
    data file (``<stem>_meta.json``; pass it as ``--meta_path``). InternVL opens ``root`` and
    ``annotation`` as given, from its working directory, so both are absolute paths."""
    folder = data_file.parent.resolve()
    meta = {
        name: {
            "root": str(folder) + "/",
            "annotation": str(folder / data_file.name),
            "data_augment": False,
            "repeat_time": 1,
            "length": count,
        }
    }
    path = data_file.with_name(data_file.name.removesuffix(".jsonl") + "_meta.json")
    atomic_write_json(path, meta, fsync=False)
    return path


def check_pairing(fmt: str, dialect: str) -> None:
    """Refuse a pixel-frame dialect for the InternVL format: InternVL feeds 448-pixel tiles of the image
    resized to a tile grid (``dynamic_preprocess``), so pixels of the saved image mean nothing to it."""
    if fmt == "internvl" and not get_dialect(dialect).relative:
        raise ValueError(
            f"--dialect {dialect} writes pixels of the image a Qwen2.5-VL processor feeds; InternVL's "
            "finetune feeds 448-pixel tiles of the image resized to a tile grid, so those numbers would be "
            "wrong: use a relative dialect (internvl-norm1000, InternVL's own)"
        )


def write_file_export(
    root: Path, fmt: str, path: Path, name: str, split: str | None, options: ExportOptions
) -> FrameStats:
    """Write the data file ``path`` (and the dataset entry ``name`` where the format has one); images go
    into its folder. Returns the count and pixel range of the images as saved."""
    if options.system and fmt in NO_SYSTEM_TURN:
        raise ValueError(
            f"--system is not supported for --format {fmt}: its loader takes the system prompt from the "
            "conversation template (LLaVA: --version; InternVL: the template's system_message)"
        )
    builder, _ = EXPORTERS[fmt]
    folder = path.parent
    warned: list[str] = []
    stats = FrameStats()

    def items() -> Iterable[dict]:
        for record in iter_records(root, split):
            item = render(record, root, options, warned, as_built=fmt == "swift-objects")
            place_image(item, folder, options.keep_metadata)
            stats.add(item.size)
            yield builder(item, item.rel.as_posix())

    with atomic_output(path, fsync=False) as tmp, open(tmp, "w", encoding="utf-8") as f:
        _write_items(items(), f, as_list=(fmt == "llava"))
        if stats.count == 0:
            raise ValueError(f"no records with split {split!r} in {root / 'records'}; check the split name")
    if fmt in ("sharegpt", "llamafactory"):
        _dataset_info(path, name)
    if fmt == "internvl":
        _internvl_meta(path, name, stats.count)
    return stats
