"""``--format internvl`` read back by InternVL's own data checks, re-implemented from
OpenGVLab/InternVL at commit 2410d1dbf208f0e799459aff9376e5747dbf41a2 (its finetune imports torch,
deepspeed and flash-attn, so it is not imported here):

- ``internvl_chat/internvl/train/internvl_chat_finetune.py``: ``build_datasets`` reads the meta JSON
  (``json.loads(open(meta_path).read())``) and, per dataset name, ``repeat_time`` and ``data_augment``;
  ``LazySupervisedDataset.__init__`` asserts ``meta['annotation'].endswith('jsonl')`` ("annotation must
  be jsonl"), opens it as given (from the working directory) and keeps its lines, and ``root``;
  ``__getitem__`` ``json.loads`` a line and, for a ``str`` ``image``, calls ``multi_modal_get_item``:
  ``<image>`` added to ``conversations[0]`` when missing, the image at ``os.path.join(root, image)``
  opened with PIL and ``.convert('RGB')``.
- ``internvl_chat/internvl/train/dataset.py``: ``preprocess_internvl2_5`` takes a leading ``system`` turn,
  then only ``human``/``gpt`` (else NotImplementedError) and asserts that the ``<image>`` placeholders of
  the human turns number the images (1); ``preprocess`` (older templates) asserts human/gpt alternation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from medground.data.export import export

try:
    from _records_fixture import RECORD_IDS, build_output
except ImportError:  # tests/ laid out as packages
    from tests.data._records_fixture import RECORD_IDS, build_output


def _internvl_items(meta_path: Path) -> list[dict]:
    """Every item InternVL's finetune would build from ``meta_path`` (the checks listed above)."""
    ds_collections = json.loads(meta_path.read_text())  # build_datasets: json.loads(open(...).read())
    items = []
    for ds_name, meta in ds_collections.items():
        repeat_time, is_train = meta["repeat_time"], meta["data_augment"]
        assert isinstance(repeat_time, int | float) and isinstance(is_train, bool), ds_name
        assert meta["annotation"].endswith("jsonl"), f"annotation must be jsonl, but got {meta['annotation']}"
        with open(meta["annotation"]) as f:
            raw_data = f.readlines()
        assert meta["length"] == len(raw_data)
        for line in raw_data:
            data_item = json.loads(line)
            assert "image" in data_item and isinstance(data_item["image"], str) and data_item["image"]
            turns = data_item["conversations"]
            assert "<image>" in turns[0]["value"]  # else InternVL would add one in front
            with Image.open(os.path.join(meta["root"], data_item["image"])) as image:
                size = image.convert("RGB").size
            human = [t for t in turns if t["from"] == "human"]
            assert sum(t["value"].count("<image>") for t in human) == 1
            assert all(t["from"] in ("human", "gpt") for t in turns)
            assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
            items.append({**data_item, "size": size})
    return items


def test_internvl_export_loads_in_internvl_finetune_from_another_working_directory(tmp_path, monkeypatch):
    root = build_output(tmp_path / "out")
    written = export(root, "internvl", dialect="internvl-norm1000", dest=tmp_path / "ivl")
    assert written == tmp_path / "ivl" / "internvl_internvl-norm1000.jsonl"
    meta_path = tmp_path / "ivl" / "internvl_internvl-norm1000_meta.json"
    meta = json.loads(meta_path.read_text())
    assert list(meta) == ["internvl_internvl-norm1000"]
    assert set(meta["internvl_internvl-norm1000"]) == {
        "root",
        "annotation",
        "data_augment",
        "repeat_time",
        "length",
    }
    monkeypatch.chdir(tmp_path / "out")  # InternVL runs from its own folder: the paths are absolute
    items = _internvl_items(meta_path)
    assert [it["id"] for it in items] == RECORD_IDS
    assert all((it["width"], it["height"]) == it["size"] for it in items)
    # record a (64 x 48), liver [10, 8, 30, 20): round(1000 * edge / side) = 156, 167, 469, 417
    assert items[0]["conversations"][1]["value"] == (
        "The <ref>liver</ref><box>[[156, 167, 469, 417]]</box> is in the upper left of the image."
    )
    # the spleen [40, 10, 50, 30) asked about alone: 625, 208, 781, 625
    assert items[0]["conversations"][2]["value"] == "What is in <box>[[625, 208, 781, 625]]</box>?"


def test_internvl_refuses_what_its_loader_would_get_wrong(tmp_path):
    root = build_output(tmp_path / "out")
    with pytest.raises(ValueError, match="--system is not supported for --format internvl"):
        export(root, "internvl", system="You are a radiologist.")
    with pytest.raises(ValueError, match="448-pixel tiles"):
        export(root, "internvl", dialect="qwen2.5-vl-pixels")
