"""Tests of the sharded exports (Parquet, WebDataset), read back with their own readers: HF datasets'
``load_dataset("parquet")`` and the ``webdataset`` package."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from datasets import Image as HFImage
from datasets import load_dataset
from PIL import Image
from typer.testing import CliRunner

from medground.cli import app
from medground.data.export import export

try:
    from _records_fixture import RECORD_IDS, build_output
except ImportError:  # tests/ laid out as packages
    from tests.data._records_fixture import RECORD_IDS, build_output


def _build_with_a_jpeg(root: Path) -> tuple[Path, list[dict]]:
    """The 3-record fixture with record c's image stored as JPEG and b's (40 x 40 grey) a random texture,
    so that a resize shows; returns (root, records as written)."""
    build_output(root)
    texture = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)
    Image.fromarray(texture).save(root / "images/demo_ct/b.png")
    with Image.open(root / "images/demo_fundus/c.png") as image:
        image.save(root / "images/demo_fundus/c.jpg", quality=90)
    (root / "images/demo_fundus/c.png").unlink()
    shard = root / "records/shard-00001.jsonl"
    shard.write_text(shard.read_text().replace("images/demo_fundus/c.png", "images/demo_fundus/c.jpg"))
    records = [
        json.loads(line) for path in sorted((root / "records").glob("*.jsonl")) for line in path.open()
    ]
    return root, records


def _shards(folder: Path, suffix: str) -> list[str]:
    return [str(p) for p in sorted(folder.glob(f"shard-*{suffix}"))]


def _self_contained(carried: dict, record: dict, name: str, size: tuple[int, int]) -> None:
    """``carried`` is ``record`` in the frame of the image carried as ``name`` (``size``): no path back to
    the build, masks as RLE whose decoded box (pycocotools, not medground) is the region's box."""
    from pycocotools import mask as coco_mask

    assert carried["image"] == name and (carried["width"], carried["height"]) == size
    assert carried["original"] == {
        "image": record["image"],
        "width": record["width"],
        "height": record["height"],
        "boxes": [r["box"] for r in record["regions"]],
    }
    assert "mask" not in json.dumps(carried["regions"])
    for region in carried["regions"]:
        rle = {"size": region["rle"]["size"], "counts": region["rle"]["counts"].encode()}
        mask = coco_mask.decode(rle).astype(bool)
        assert mask.shape == (size[1], size[0]) and int(mask.sum()) == region["area"]
        ys, xs = np.nonzero(mask)
        assert [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] == region["box"]
    rest = {k: v for k, v in carried.items() if k not in ("image", "width", "height", "regions", "original")}
    assert rest == {k: v for k, v in record.items() if k not in ("image", "width", "height", "regions")}


def test_parquet_round_trips_every_record_and_image_byte(tmp_path):
    root, records = _build_with_a_jpeg(tmp_path / "out")
    folder = export(root, "parquet", shard_size=2)
    assert folder == root / "export" / "parquet_qwen-vl-grid"
    assert sorted(p.name for p in folder.iterdir()) == [
        "export.json",
        "shard-000000.parquet",
        "shard-000001.parquet",
    ]

    ds = load_dataset(
        "parquet", data_files=_shards(folder, ".parquet"), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert ds.num_rows == 3 and ds["id"] == RECORD_IDS and ds["key"] == ["000000", "000001", "000002"]
    assert ds[0]["image"].size == (64, 48)  # the image column decodes to PIL by itself
    raw = ds.cast_column("image", HFImage(decode=False))
    for row, record in zip(raw, records, strict=True):
        name = row["key"] + Path(record["image"]).suffix
        _self_contained(json.loads(row["record"]), record, name, (record["width"], record["height"]))
        assert row["image"]["bytes"] == (root / record["image"]).read_bytes()  # no metadata to drop
        assert row["image"]["path"] == name
        assert (row["width"], row["height"]) == (record["width"], record["height"])
        assert row["split"] == record["split"] and row["dialect"] == "qwen-vl-grid"
        # the record's own dialect: turns unchanged (each already has one <image>, in the first turn)
        assert row["conversations"] == record["conversations"]
    assert raw[2]["image"]["path"].endswith(".jpg")


def test_webdataset_round_trips_every_record_and_image_byte(tmp_path):
    root, records = _build_with_a_jpeg(tmp_path / "out")
    folder = export(root, "webdataset", shard_size=2)
    assert folder == root / "export" / "webdataset_qwen-vl-grid"
    urls = _shards(folder, ".tar")
    with tarfile.open(urls[0]) as tar:
        assert tar.getnames() == ["000000.png", "000000.json", "000001.png", "000001.json"]
    with tarfile.open(urls[1]) as tar:
        assert tar.getnames() == ["000002.jpg", "000002.json"]

    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode())
    assert [s["__key__"] for s in samples] == ["000000", "000001", "000002"]
    for sample, record in zip(samples, records, strict=True):
        ext = Path(record["image"]).suffix[1:]
        assert sample[ext] == (root / record["image"]).read_bytes()
        meta = sample["json"]
        name = f"{sample['__key__']}.{ext}"
        assert meta["id"] == record["id"] and meta["image"] == name  # the member's own name in the shard
        _self_contained(meta["record"], record, name, (record["width"], record["height"]))
        assert meta["conversations"] == record["conversations"]
        assert (meta["width"], meta["height"]) == Image.open(io.BytesIO(sample[ext])).size
    # the README's reading: .decode("pil") gives PIL images
    decoded = next(iter(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil")))
    assert isinstance(decoded["png"], Image.Image) and decoded["png"].size == (64, 48)


def test_split_and_dialect_rerender_boxes_and_images_in_both_formats(tmp_path):
    root, records = _build_with_a_jpeg(tmp_path / "out")
    # record b (40 x 40, liver box [5, 5, 25, 35]) in qwen2.5-vl: smart_resize lifts it to Qwen's minimum of
    # 56 x 56 pixels (min_pixels = 56 * 56), so the box scales by 56 / 40 = 1.4 to [7, 7, 35, 49]
    with Image.open(root / "images/demo_ct/b.png") as original:
        expected = original.resize((56, 56), Image.Resampling.LANCZOS)
    answer = 'The {"bbox_2d": [7, 7, 35, 49], "label": "liver"}.'

    parquet = export(root, "parquet", split="val", dialect="qwen2.5-vl-pixels")
    assert parquet == root / "export" / "parquet_qwen2.5-vl-pixels_val"
    ds = load_dataset(
        "parquet", data_files=_shards(parquet, ".parquet"), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert ds["id"] == ["demo_ct/b#0"] and ds[0]["dialect"] == "qwen2.5-vl-pixels"
    assert ds[0]["conversations"][1]["value"] == answer
    assert (ds[0]["width"], ds[0]["height"]) == (56, 56)
    assert list(ds[0]["image"].getdata()) == list(expected.getdata())
    # the record in the carried frame: the liver's mask, resized by nearest neighbour, spans [7, 35) x [7, 49)
    carried = json.loads(ds[0]["record"])
    _self_contained(carried, records[1], "000000.png", (56, 56))
    assert carried["regions"][0]["box"] == [7, 7, 35, 49]

    tars = export(root, "webdataset", split="val", dialect="qwen2.5-vl-pixels")
    (sample,) = list(wds.WebDataset(_shards(tars, ".tar"), shardshuffle=False, empty_check=False).decode())
    assert sample["json"]["conversations"][1]["value"] == answer
    assert sample["json"]["image"] == "000000.png" and sample["json"]["record"] == carried
    with Image.open(io.BytesIO(sample["png"])) as image:
        assert image.mode == "L" and list(image.getdata()) == list(expected.getdata())


def test_reexport_replaces_the_shards_atomically_and_bad_input_is_named(tmp_path):
    root, _ = _build_with_a_jpeg(tmp_path / "out")
    dest = tmp_path / "wds"
    export(root, "webdataset", dest=dest, shard_size=1)
    assert [Path(u).name for u in _shards(dest, ".tar")] == [f"shard-00000{i}.tar" for i in range(3)]
    first = (dest / "shard-000000.tar").read_bytes()
    export(root, "webdataset", dest=dest, shard_size=2)  # fewer shards: the old third one goes
    assert [Path(u).name for u in _shards(dest, ".tar")] == ["shard-000000.tar", "shard-000001.tar"]
    export(root, "webdataset", dest=tmp_path / "again", shard_size=1)
    assert (tmp_path / "again" / "shard-000000.tar").read_bytes() == first  # same export, same bytes

    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    with pytest.raises(ValueError, match="no records with split 'tset'"):
        export(root, "webdataset", dest=dest, split="tset")
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before  # a failed export leaves the old shards
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "out", "wds"]  # no staging folder left
    with pytest.raises(ValueError, match="shard_size must be at least 1"):
        export(root, "parquet", shard_size=0)
    with pytest.raises(ValueError, match="shard_size applies to parquet and webdataset only, not to 'llava'"):
        export(root, "llava", shard_size=5)
    (root / "images/demo_ct/b.png").unlink()
    with pytest.raises(FileNotFoundError, match="b.png: image of record 'demo_ct/b#0' is missing"):
        export(root, "parquet", dest=tmp_path / "pq")
    assert not (tmp_path / "pq").exists()


def test_cli_export_shards(tmp_path):
    root, _ = _build_with_a_jpeg(tmp_path / "out")
    result = CliRunner().invoke(app, ["export", str(root), "--format", "parquet", "--shard-size", "1"])
    assert result.exit_code == 0, result.output
    folder = root / "export" / "parquet_qwen-vl-grid"
    assert result.stdout.splitlines()[0] == str(folder)
    assert "no pixel setting needed" in result.stderr
    assert len(_shards(folder, ".parquet")) == 3
    result = CliRunner().invoke(app, ["export", str(root), "--format", "sharegpt", "--shard-size", "1"])
    assert result.exit_code != 0 and "shard_size applies to parquet and webdataset only" in result.output


def test_parquet_feature_metadata_uses_only_types_datasets_3_knows(tmp_path):
    """datasets 3.0.0's ``_FEATURE_TYPES`` (read in a datasets==3.0.0 install): a 4.x-only type such as
    ``List`` in the metadata makes 3.x fail with "Feature type 'List' not found"."""
    import pyarrow.parquet as pq

    known_in_3_0 = {"Array2D", "Array3D", "Array4D", "Array5D", "Audio", "ClassLabel", "Image", "LargeList"}
    known_in_3_0 |= {"Sequence", "Translation", "TranslationVariableLanguages", "Value"}
    root, _ = _build_with_a_jpeg(tmp_path / "out")
    folder = export(root, "parquet")
    metadata = pq.read_schema(_shards(folder, ".parquet")[0]).metadata[b"huggingface"]
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("_type"), str):
                found.add(node["_type"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(metadata)["info"]["features"])
    assert found and found <= known_in_3_0, found
