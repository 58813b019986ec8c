"""Tests of the exporters (llava, sharegpt, llamafactory, swift) and of loading records with HF datasets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from medground.data.export import EXPORTERS, export, load_hf_dataset

try:
    from _records_fixture import RECORD_IDS, build_output
except ImportError:  # tests/ laid out as packages
    from tests.data._records_fixture import RECORD_IDS, build_output

Q_A = "<image>\nWhere is the liver?"
A_A = "The <ref>liver</ref><box>(156,166),(453,395)</box> is in the upper left of the image."


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_llava(tmp_path):
    root = build_output(tmp_path / "out")
    path = export(root, "llava")
    assert path == root / "export" / "llava.json"
    items = json.loads(path.read_text())
    assert [it["id"] for it in items] == RECORD_IDS
    assert items[0]["image"] == "images/demo_ct/a.png" and (root / items[0]["image"]).exists()
    assert items[0]["conversations"][:2] == [{"from": "human", "value": Q_A}, {"from": "gpt", "value": A_A}]
    assert len(items[0]["conversations"]) == 6
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_sharegpt_and_split(tmp_path):
    root = build_output(tmp_path / "out")
    items = _jsonl(export(root, "sharegpt"))
    assert len(items) == 3
    assert items[0]["messages"][:2] == [
        {"role": "user", "content": Q_A},
        {"role": "assistant", "content": A_A},
    ]
    assert [m["role"] for m in items[0]["messages"]] == ["user", "assistant"] * 3
    assert items[2]["images"] == ["images/demo_fundus/c.png"]
    val = _jsonl(export(root, "sharegpt", split="val"))
    assert val == [
        {
            "messages": [
                {"role": "user", "content": "<image>\nFind the liver."},
                {"role": "assistant", "content": "The <ref>liver</ref><box>(125,125),(600,850)</box>."},
            ],
            "images": ["images/demo_ct/b.png"],
        }
    ]
    assert (root / "export" / "sharegpt_val.jsonl").exists()
    with pytest.raises(ValueError, match="no records with split 'tset'"):
        export(root, "sharegpt", dest=tmp_path / "x.jsonl", split="tset")
    assert not (tmp_path / "x.jsonl").exists() and not list(tmp_path.glob(".x.jsonl*"))


def test_llamafactory(tmp_path):
    root = build_output(tmp_path / "out")
    dest = tmp_path / "lf"
    path = export(root, "llamafactory", dest=dest)
    assert path == dest / "medground.jsonl"
    info = json.loads((dest / "dataset_info.json").read_text())
    assert info == {
        "medground": {
            "file_name": "medground.jsonl",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
            },
        }
    }
    items = _jsonl(path)
    assert items[0]["images"] == ["images/demo_ct/a.png"]  # inside dataset_dir (= media_dir), relative to it
    assert (dest / items[0]["images"][0]).exists()
    assert items[0]["messages"][0] == {"role": "user", "content": Q_A}
    export(root, "llamafactory", dest=dest, split="train")  # a second entry is added, the first kept
    info = json.loads((dest / "dataset_info.json").read_text())
    assert sorted(info) == ["medground", "medground_train"]
    assert info["medground_train"]["file_name"] == "medground_train.jsonl"


def test_swift_relative_paths_and_placeholder(tmp_path):
    root = build_output(tmp_path / "out")
    shard = root / "records" / "shard-00001.jsonl"
    rec = json.loads(shard.read_text())
    rec["conversations"][0]["value"] = "Describe this image."  # placeholder missing
    rec["conversations"][1]["value"] = "An <image> of the eye."  # stray placeholder outside turn 0
    shard.write_text(json.dumps(rec) + "\n")
    items = _jsonl(export(root, "swift"))
    folder = root / "export"
    assert items[0]["images"] == ["images/demo_ct/a.png"]  # relative to the export file's folder
    assert not os.path.isabs(items[2]["images"][0]) and (folder / items[2]["images"][0]).exists()
    assert items[2]["messages"][0]["content"] == "<image>\nDescribe this image."
    assert items[2]["messages"][1]["content"] == "An  of the eye."
    assert sum(m["content"].count("<image>") for it in items for m in it["messages"]) == 3


def test_unknown_format(tmp_path):
    root = build_output(tmp_path / "out")
    with pytest.raises(KeyError, match="known: llava, sharegpt, llamafactory, swift. Did you mean 'swift'"):
        export(root, "swfit")
    assert sorted(EXPORTERS) == ["llamafactory", "llava", "sharegpt", "swift"]
    with pytest.raises(FileNotFoundError, match="medground build"):
        export(tmp_path / "empty", "llava")


def test_load_hf_dataset(tmp_path):
    root = build_output(tmp_path / "out")
    ds = load_hf_dataset(root, cache_dir=tmp_path / "cache")
    assert ds.num_rows == 3
    assert {"id", "regions", "turns", "conversations", "plane"} <= set(ds.column_names)
    assert ds[0]["regions"][0]["box"] == [10, 8, 30, 20]
    assert ds[0]["turns"][2] == {"task": "rec", "structure": "left kidney", "regions": [], "negative": True}
    assert ds[1]["plane"] is None and ds[0]["plane"] == "axial"
    assert load_hf_dataset(root, split="val", cache_dir=tmp_path / "cache")["id"] == ["demo_ct/b#0"]
    # a record with an extra field and all-null optional fields still loads
    extra = json.loads((root / "records" / "shard-00001.jsonl").read_text())
    extra.update(id="demo_fundus/d#0", spacing=[0.5, 0.5], plane=None, body_region=None)
    (root / "records" / "shard-00002.jsonl").write_text(json.dumps(extra) + "\n")
    ds = load_hf_dataset(root, cache_dir=tmp_path / "cache2")
    assert ds.num_rows == 4 and ds[3]["spacing"] == [0.5, 0.5] and ds[0]["spacing"] is None
