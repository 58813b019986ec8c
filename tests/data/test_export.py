"""Tests of the exporters (llava, sharegpt, llamafactory, swift) and of loading records with HF datasets."""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medground.data.export import EXPORTERS, export, load_hf_dataset
from medground.types import Box

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
    assert path == root / "export" / "llava_qwen-vl-grid.json"  # the default name carries the dialect
    items = json.loads(path.read_text())
    assert [it["id"] for it in items] == RECORD_IDS
    assert items[0]["image"] == "images/demo_ct/a.png" and (root / items[0]["image"]).exists()
    assert items[0]["conversations"][:2] == [{"from": "human", "value": Q_A}, {"from": "gpt", "value": A_A}]
    assert len(items[0]["conversations"]) == 6
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_sharegpt_and_split(tmp_path):
    root = build_output(tmp_path / "out")
    items = _jsonl(export(root, "sharegpt"))
    assert len(items) == 3 and [it["id"] for it in items] == RECORD_IDS
    assert items[0]["messages"][:2] == [
        {"role": "user", "content": Q_A},
        {"role": "assistant", "content": A_A},
    ]
    assert [m["role"] for m in items[0]["messages"]] == ["user", "assistant"] * 3
    assert items[2]["images"] == ["images/demo_fundus/c.png"]
    val = _jsonl(export(root, "sharegpt", split="val"))
    assert val == [
        {
            "id": "demo_ct/b#0",
            "messages": [
                {"role": "user", "content": "<image>\nFind the liver."},
                {"role": "assistant", "content": "The <ref>liver</ref><box>(125,125),(600,850)</box>."},
            ],
            "images": ["images/demo_ct/b.png"],
        }
    ]
    assert (root / "export" / "sharegpt_qwen-vl-grid_val.jsonl").exists()
    info = json.loads((root / "export" / "dataset_info.json").read_text())  # sharegpt gets one too
    assert sorted(info) == ["sharegpt_qwen-vl-grid", "sharegpt_qwen-vl-grid_val"]
    with pytest.raises(ValueError, match="no records with split 'tset'"):
        export(root, "sharegpt", dest=tmp_path / "x.jsonl", split="tset")
    assert not (tmp_path / "x.jsonl").exists() and not list(tmp_path.glob(".x.jsonl*"))


def test_llamafactory(tmp_path):
    root = build_output(tmp_path / "out")
    dest = tmp_path / "lf"
    path = export(root, "llamafactory", dest=dest)
    assert path == dest / "medground_qwen-vl-grid.jsonl"
    info = json.loads((dest / "dataset_info.json").read_text())
    assert info == {
        "medground_qwen-vl-grid": {
            "file_name": "medground_qwen-vl-grid.jsonl",
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
    }
    items = _jsonl(path)
    assert items[0]["images"] == ["images/demo_ct/a.png"]  # inside dataset_dir (= media_dir), relative to it
    assert (dest / items[0]["images"][0]).exists()
    assert items[0]["messages"][0] == {"role": "user", "content": Q_A}
    export(root, "llamafactory", dest=dest, split="train")  # a second entry is added, the first kept
    export(root, "llamafactory", dest=dest, dialect="qwen2-vl-norm1000")  # another dialect: a third
    info = json.loads((dest / "dataset_info.json").read_text())
    assert sorted(info) == [
        "medground_qwen-vl-grid",
        "medground_qwen-vl-grid_train",
        "medground_qwen2-vl-norm1000",
    ]
    assert info["medground_qwen-vl-grid_train"]["file_name"] == "medground_qwen-vl-grid_train.jsonl"
    assert len(_jsonl(path)) == 3  # not overwritten by the other dialect


def test_swift_relative_paths_and_placeholder(tmp_path):
    root = build_output(tmp_path / "out")
    shard = root / "records" / "shard-00001.jsonl"
    rec = json.loads(shard.read_text())
    rec["conversations"][0]["value"] = "Describe this image."  # placeholder missing
    rec["conversations"][1]["value"] = "An <image> of the eye."  # stray placeholder outside turn 0
    shard.write_text(json.dumps(rec) + "\n")
    items = _jsonl(export(root, "swift", system="You read medical images."))
    folder = root / "export"
    assert all(it["messages"][0] == {"role": "system", "content": "You read medical images."} for it in items)
    for it in items:
        it["messages"] = it["messages"][1:]
    assert items[0]["images"] == ["images/demo_ct/a.png"]  # relative to the export file's folder
    assert not os.path.isabs(items[2]["images"][0]) and (folder / items[2]["images"][0]).exists()
    assert items[2]["messages"][0]["content"] == "<image>\nDescribe this image."
    assert items[2]["messages"][1]["content"] == "An  of the eye."
    assert sum(m["content"].count("<image>") for it in items for m in it["messages"]) == 3


def test_unknown_format(tmp_path):
    root = build_output(tmp_path / "out")
    with pytest.raises(
        KeyError,
        match="known: llava, sharegpt, llamafactory, swift, swift-objects, internvl, parquet, webdataset",
    ):
        export(root, "swfit")
    assert sorted(EXPORTERS) == ["internvl", "llamafactory", "llava", "sharegpt", "swift", "swift-objects"]
    for fmt in ("llava", "internvl"):  # their loaders take the system prompt from the template
        with pytest.raises(ValueError, match="--system is not supported"):
            export(root, fmt, system="x")
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


# --- exports that train as-is -------------------------------------------------------------------------------
# The consumers' code paths, re-implemented from their sources (they would replace torch here, so they are
# not installed):
# - LLaMA-Factory ff6d4d12 (hiyouga/LLaMA-Factory): hparams/model_args.py image_max_pixels = 768 * 768,
#   image_min_pixels = 32 * 32; data/mm_plugin.py BasePlugin._preprocess_image (shrinks by
#   sqrt(max / (w * h)) with int() when w * h > max), Qwen2VLPlugin._preprocess_image (sides below 28 grow),
#   BasePlugin._validate_messages (count of "<image>" == number of images); data/converter.py
#   _find_medias (os.path.join(media_dir, path) must be a file; media_dir defaults to dataset_dir) and
#   SharegptDatasetConverter (user/assistant alternate, even count).
# - ms-swift 3602360a (modelscope/ms-swift): template/vision_utils.py _check_path (a relative path is
#   looked up from the working directory, or under ROOT_IMAGE_DIR); model/models/qwen.py MAX_PIXELS
#   (examples use 1003520), passed to qwen_vl_utils' smart_resize.

LF_MAX, LF_MIN, SWIFT_MAX = 768 * 768, 32 * 32, 1003520


def _llamafactory_fed_size(width: int, height: int) -> tuple[int, int]:
    """Size of the image LLaMA-Factory's Qwen2-VL plugin hands to the processor, with its defaults."""
    if width * height > LF_MAX:
        factor = math.sqrt(LF_MAX / (width * height))
        width, height = int(width * factor), int(height * factor)
    if width * height < LF_MIN:
        factor = math.sqrt(LF_MIN / (width * height))
        width, height = int(width * factor), int(height * factor)
    return max(width, 28), max(height, 28)


def _big_build(root: Path) -> tuple[Path, list[np.ndarray]]:
    """A one-record build of a 1348 x 1070 image (a Kvasir frame's size) with two regions and a rewritten turn."""
    from medground.grounding import get_dialect

    w, h = 1348, 1070
    rng = np.random.default_rng(0)
    (root / "images/kvasir").mkdir(parents=True)
    (root / "records").mkdir()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images/kvasir/k1.png")
    yy, xx = np.mgrid[:h, :w]
    masks = [
        ((xx - 400) ** 2 / 150**2 + (yy - 300) ** 2 / 90**2 <= 1),  # an ellipse
        (xx >= 1001) & (xx < 1347) & (yy >= 613) & (yy < 1070),  # touches the right and bottom edges
    ]
    regions = []
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        rel = f"masks/kvasir/k1/polyp_{i:03d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / rel)
        regions.append(
            {"name": "polyp", "key": "polyp", "box": box, "mask": rel, "instance": i, "area": int(mask.sum())}
        )
    qwen_vl = get_dialect("qwen-vl")
    boxes = [Box.from_list(r["box"]) for r in regions]
    record = {
        "id": "kvasir/k1#0",
        "image": "images/kvasir/k1.png",
        "width": w,
        "height": h,
        "dialect": "qwen-vl",
        "split": "train",
        "conversations": [
            {"from": "human", "value": "<image>\nWhere are the polyps?"},
            {"from": "gpt", "value": f"The {qwen_vl.ground('polyp', boxes, w, h)} are here."},
            {"from": "human", "value": f"What is at {qwen_vl.box(boxes[1], w, h)}?"},
            # an LLM-rewritten answer: other words, the box string copied verbatim
            {
                "from": "gpt",
                "value": f"You can see a polyp there, {qwen_vl.ground('polyp', boxes[1:], w, h)}.",
            },
        ],
        "turns": [
            {"task": "rec", "structure": "polyp", "regions": [0, 1], "negative": False},
            {"task": "roc", "structure": "polyp", "regions": [1], "negative": False},
        ],
        "regions": regions,
    }
    (root / "records/shard-00000.jsonl").write_text(json.dumps(record) + "\n")
    return root, masks


def _tight_box(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def test_qwen25_export_boxes_match_the_masks_in_the_image_the_trainer_feeds(tmp_path):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

    root, masks = _big_build(tmp_path / "build")
    dest = tmp_path / "lf"
    path = export(root, "llamafactory", dest=dest, dialect="qwen2.5-vl-pixels")
    item = _jsonl(path)[0]

    # LLaMA-Factory's converter: media path joined to media_dir (= dataset_dir, the export folder) is a file
    info = json.loads((dest / "dataset_info.json").read_text())["medground_qwen2.5-vl-pixels"]
    assert (dest / info["file_name"]).is_file()
    image_path = os.path.join(dest, item["images"][0])
    assert os.path.isfile(image_path)
    roles = [m["role"] for m in item["messages"]]
    assert roles == ["user", "assistant"] * 2  # alternation and even count
    assert sum(m["content"].count("<image>") for m in item["messages"]) == len(
        item["images"]
    )  # _validate_messages

    # the fed image: LLaMA-Factory's resize, then the Qwen2.5-VL processor's smart_resize (default 12845056
    # max pixels; ms-swift users' MAX_PIXELS=1003520): neither may change the exported image
    with Image.open(image_path) as image:
        w, h = image.size
    assert _llamafactory_fed_size(w, h) == (w, h)
    for max_pixels in (12845056, SWIFT_MAX):
        assert hf_smart_resize(h, w, factor=28, min_pixels=56 * 56, max_pixels=max_pixels) == (h, w)
    assert w * h <= LF_MAX and w % 28 == 0 and h % 28 == 0

    # every box in the text (read with json, not with medground) equals its mask's box in the fed image
    fed_masks = [
        np.array(Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST)) > 0
        for m in masks
    ]
    answers = [
        json.loads(m["content"].split("The ", 1)[-1].rsplit(" are", 1)[0]) for m in item["messages"][1:2]
    ]
    boxes = [a["bbox_2d"] for a in answers[0]]
    roc_question = json.loads(item["messages"][2]["content"].split(" at ", 1)[1].rstrip("?"))["bbox_2d"]
    rewritten = json.loads(item["messages"][3]["content"].split("there, ", 1)[1].rstrip("."))["bbox_2d"]
    for got, mask in [
        (boxes[0], fed_masks[0]),
        (boxes[1], fed_masks[1]),
        (roc_question, fed_masks[1]),
        (rewritten, fed_masks[1]),
    ]:
        assert max(abs(a - b) for a, b in zip(got, _tight_box(mask), strict=True)) <= 1, (
            got,
            _tight_box(mask),
        )

    # the folder survives a move: every path still resolves from the export file's folder
    moved = tmp_path / "elsewhere" / "lf"
    shutil.move(dest, moved)
    assert os.path.isfile(os.path.join(moved, _jsonl(moved / path.name)[0]["images"][0]))


def test_every_format_and_dialect_loads_through_the_consumers_path(tmp_path, monkeypatch):
    from datasets import load_dataset

    from medground.grounding import DIALECTS

    root, _ = _big_build(tmp_path / "build")
    for dialect in DIALECTS:
        for fmt in EXPORTERS:
            if fmt == "internvl" and not DIALECTS[dialect].relative:  # refused: InternVL feeds its own tiles
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                path = export(root, fmt, dest=tmp_path / dialect / fmt, dialect=dialect)
            warned = any("plain characters" in str(w.message) for w in caught)
            assert warned == (dialect == "qwen-vl-grid" and fmt != "swift-objects")
            folder = path.parent
            if fmt == "llava":
                item = json.loads(path.read_text())[0]
                image, texts = item["image"], [t["value"] for t in item["conversations"]]
            elif fmt == "internvl":
                item = _jsonl(path)[0]
                image, texts = item["image"], [t["value"] for t in item["conversations"]]
            else:
                item = _jsonl(path)[0]
                (image,), texts = item["images"], [m["content"] for m in item["messages"]]
                rows = load_dataset(
                    "json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf")
                )
                assert rows.num_rows == 1 and rows[0]["images"] == [image] and rows[0]["id"] == "kvasir/k1#0"
            assert item["id"] == "kvasir/k1#0"
            assert not os.path.isabs(image) and (folder / image).is_file()
            # ms-swift's _check_path: relative to the working directory (run from the export folder)
            monkeypatch.chdir(folder)
            assert os.path.exists(image)
            if (
                fmt == "swift-objects"
            ):  # swift fills one <bbox> per box and one <ref-object> per ref, in order
                objects = item["objects"]
                assert sum(t.count("<bbox>") for t in texts) == len(objects["bbox"]) == 4
                assert sum(t.count("<ref-object>") for t in texts) == len(objects["ref"])
                assert objects["bbox_type"] == "real"
                continue
            # each turn's boxes are the target dialect's, and they parse back to the regions' boxes
            target = DIALECTS[dialect]
            with Image.open(folder / image) as fed:
                size = fed.size
            found = [g.box for t in texts for g in target.parse(t, *size)]
            assert len(found) == 4 and all(target.has_box(t) for t in texts[1:])


def test_swift_objects_turns_boxes_into_placeholders_with_real_boxes(tmp_path):
    root = build_output(tmp_path / "out")
    tags = _jsonl(export(root, "swift-objects", dialect="qwen2-vl-norm1000"))
    # record a: the liver answer and the spleen question; boxes are the regions' own pixels, x1/y1 exclusive
    assert tags[0]["messages"][1]["content"] == "The <ref-object><bbox> is in the upper left of the image."
    assert tags[0]["messages"][2]["content"] == "What is in <bbox>?"
    assert tags[0]["objects"] == {
        "ref": ["liver"],
        "bbox": [[10, 8, 30, 20], [40, 10, 50, 30]],
        "bbox_type": "real",
    }
    assert tags[0]["images"] == ["images/demo_ct/a.png"]  # the image as built: swift resizes it itself
    assert tags[2]["objects"] == {"ref": [], "bbox": [], "bbox_type": "real"}  # no box in record c
    # Qwen's JSON layout (ms-swift's QWENVL_BBOX_FORMAT=new): one object per box, "<bbox>" for its list
    json_rows = _jsonl(export(root, "swift-objects", dialect="qwen2.5-vl-pixels"))
    assert json_rows[0]["messages"][1]["content"] == (
        'The {"bbox_2d": <bbox>, "label": "<ref-object>"} is in the upper left of the image.'
    )
    assert json_rows[0]["messages"][2]["content"] == 'What is in {"bbox_2d": <bbox>}?'
