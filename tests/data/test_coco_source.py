"""The COCO source: polygons and RLE (both forms) decoded to the masks drawn by hand, crowd regions read as
semantic masks, bad annotations rejected with reasons, layout detection, patient keys, and a build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from medground.data.regions import RegionConfig, extract_regions
from medground.data.sources import Item, SourceError, detect_kind, open_source
from medground.data.sources.coco import decode_segmentation
from medground.types import Rejected, Sample

H, W = 30, 40


def _runs(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE by hand: column-major run lengths, starting with a (maybe empty) run of 0s."""
    flat = mask.flatten(order="F").astype(int)
    counts, value, run = [], 0, 0
    for pixel in flat:
        if pixel == value:
            run += 1
        else:
            counts.append(run)
            value, run = pixel, 1
    counts.append(run)
    return counts


def _blob(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[rows, cols] = 1
    return mask


INSTRUMENT = _blob(slice(2, 7), slice(20, 31))  # uncompressed RLE
POLYP_RLE = _blob(slice(15, 25), slice(3, 9))  # compressed RLE
CROWD = _blob(slice(20, 26), slice(20, 26)) | _blob(slice(20, 26), slice(32, 38))  # two separate cells


def _compressed(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask))
    return {"size": [H, W], "counts": rle["counts"].decode("ascii")}


def _dataset(root: Path) -> Path:
    """A COCO file with three images (a, b, c), every kind of segmentation and every kind of bad annotation."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (H, W), dtype=np.uint8)).save(root / "images" / f"{name}.png")
    Image.fromarray(rng.integers(0, 255, (H + 2, W), dtype=np.uint8)).save(root / "c.png")  # beside the JSON
    data = {
        "info": {"description": "test"},
        "images": [
            {"id": 1, "file_name": "a.png", "width": W, "height": H, "patient_id": "P7"},
            {"id": 2, "file_name": "b.png", "width": W, "height": H},
            {"id": 3, "file_name": "c.png", "width": W, "height": H},  # the file is 2 rows taller
            {"id": 4, "file_name": "missing.png", "width": W, "height": H},
            {"id": 5, "file_name": "a.png"},  # no size
        ],
        "categories": [
            {"id": 1, "name": "polyp"},
            {"id": 2, "name": "instrument"},
            {"id": 3, "name": "cell"},
        ],
        "annotations": [
            # two polygons of one polyp: x 5..14 (10 px) x y 4..9 (6 px), and x 30..34 x y 12..13
            {
                "id": 10,
                "image_id": 1,
                "category_id": 1,
                "iscrowd": 0,
                "segmentation": [[5, 4, 15, 4, 15, 10, 5, 10], [30, 12, 35, 12, 35, 14, 30, 14]],
            },
            {
                "id": 11,
                "image_id": 1,
                "category_id": 2,
                "iscrowd": 0,
                "segmentation": {"size": [H, W], "counts": _runs(INSTRUMENT)},
            },
            {
                "id": 12,
                "image_id": 1,
                "category_id": 3,
                "iscrowd": 1,
                "segmentation": {"size": [H, W], "counts": _runs(CROWD)},
            },
            {"id": 20, "image_id": 2, "category_id": 1, "iscrowd": 0, "segmentation": _compressed(POLYP_RLE)},
            {
                "id": 21,
                "image_id": 2,
                "category_id": 2,
                "iscrowd": 0,
                "segmentation": [[1, 1, 9, 1, 9]],
            },  # odd
            {
                "id": 22,
                "image_id": 2,
                "category_id": 2,
                "iscrowd": 0,
                "segmentation": {"size": [H, W], "counts": [5, 3]},
            },
            {
                "id": 23,
                "image_id": 2,
                "category_id": 2,
                "iscrowd": 0,
                "segmentation": {"size": [W, H], "counts": [H * W]},
            },
            {
                "id": 24,
                "image_id": 2,
                "category_id": 2,
                "iscrowd": 0,
                "segmentation": {"size": [H, W], "counts": "zz"},
            },
            {
                "id": 25,
                "image_id": 2,
                "category_id": 2,
                "iscrowd": 0,
                "segmentation": [[50, 50, 60, 50, 60, 60]],
            },  # off
            {"id": 30, "image_id": 3, "category_id": 1, "iscrowd": 0, "segmentation": [[1, 1, 9, 1, 9, 9]]},
            {"id": 40, "image_id": 9, "category_id": 1, "segmentation": [[1, 1, 9, 1, 9, 9]]},
            {"id": 41, "image_id": 1, "category_id": 7, "segmentation": [[1, 1, 9, 1, 9, 9]]},
            {"id": 42, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
        ],
    }
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    (root / "meta.json").write_text(json.dumps({"modality": "endoscopy", "body_region": "colon"}))
    return path


def _load(path: Path) -> tuple[dict[str, Sample], list[Rejected], dict[str, Item]]:
    source = open_source(f"coco:{path}")
    samples, rejected, items = {}, [], {}
    for item in source.items():
        if isinstance(item, Rejected):
            rejected.append(item)
            continue
        items[item.key] = item
        for result in source.load(item):
            if isinstance(result, Sample):
                samples[item.key] = result
            else:
                rejected.append(result)
    return samples, rejected, items


def test_masks_decode_to_what_was_drawn(tmp_path):
    samples, _, _ = _load(_dataset(tmp_path))
    assert sorted(samples) == ["a", "b"]
    a = {s.name: s for s in samples["a"].structures}
    polyp = np.zeros((H, W), bool)
    polyp[4:10, 5:15] = True
    polyp[12:14, 30:35] = True
    np.testing.assert_array_equal(a["polyp"].mask != 0, polyp)
    np.testing.assert_array_equal(a["instrument"].mask != 0, INSTRUMENT.astype(bool))
    np.testing.assert_array_equal(a["cell"].mask != 0, CROWD.astype(bool))
    b = {s.name: s for s in samples["b"].structures}
    assert list(b) == ["polyp"]
    np.testing.assert_array_equal(b["polyp"].mask != 0, POLYP_RLE.astype(bool))
    assert samples["a"].modality == "endoscopy" and samples["a"].body_region == "colon"


def test_an_annotation_is_one_instance_and_a_crowd_is_split_into_its_objects(tmp_path):
    samples, _, _ = _load(_dataset(tmp_path))
    structures = samples["a"].structures
    regions, dropped = extract_regions(
        structures, {s.name: s.name for s in structures}, False, RegionConfig()
    )
    boxes = {}
    for region in regions:
        boxes.setdefault(region.key, []).append(region.box.as_list())
    # the polyp's two polygons are one object: one box over both pieces
    assert boxes["polyp"] == [[5, 4, 35, 14]]
    assert boxes["instrument"] == [[20, 2, 31, 7]]
    # the crowd region holds two separate cells: two boxes, as for any semantic mask
    assert sorted(boxes["cell"]) == [[20, 20, 26, 26], [32, 20, 38, 26]]
    assert dropped == []


def test_bad_annotations_and_images_are_rejected_with_reasons(tmp_path):
    path = _dataset(tmp_path)
    _, rejected, _ = _load(path)
    reasons = {r.input.replace(str(path), "JSON"): r.reason for r in rejected}
    assert "even count" in reasons["JSON#annotation 21"]
    assert "cover 8 pixels" in reasons["JSON#annotation 22"]
    assert "RLE size [40, 30]" in reasons["JSON#annotation 23"]
    assert "outside" in reasons["JSON#annotation 24"]
    assert "empty" in reasons["JSON#annotation 25"]  # the polygon lies outside the image: nothing inside
    assert "not among the images" in reasons["JSON#annotation 40"]
    assert "not among the categories" in reasons["JSON#annotation 41"]
    assert "box-only" in reasons["JSON#annotation 42"]
    assert "not found" in reasons["JSON#image 4"]
    assert "width and height" in reasons["JSON#image 5"]
    size = [r for k, r in reasons.items() if k.startswith("JSON#annotation 30")]
    assert size and "differs from image size 40x32" in size[0]
    assert len(rejected) == 12  # 11 above + image c, left with no usable mask


def test_patient_key_from_the_image_entry_or_the_slice_name(tmp_path):
    path = _dataset(tmp_path)
    _, _, items = _load(path)
    assert items["a"].case == "P7"
    assert items["b"].case is None  # "b.png" names no patient
    data = json.loads(path.read_text())
    data["images"][1]["file_name"] = "ct_case12_z031.png"
    shutil.copy(tmp_path / "images" / "b.png", tmp_path / "images" / "ct_case12_z031.png")
    path.write_text(json.dumps(data))
    _, _, items = _load(path)
    assert items["ct_case12_z031"].case == "ct_case12"


def test_polygons_match_pycocotools_up_to_boundary_pixels():
    """Convention: a pixel is inside when its centre (x + 0.5, y + 0.5) is. pycocotools walks the outline on
    a 5x finer grid instead; the two may disagree only on pixels whose centre is within 1 px of an edge."""
    rng = np.random.default_rng(3)
    height, width = 64, 80
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    for _ in range(20):
        angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
        radii = rng.uniform(8, 25, 7)
        cx, cy = rng.uniform(25, 55), rng.uniform(25, 40)
        xy = np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)])
        ours = decode_segmentation([xy.ravel().tolist()], height, width).astype(bool)
        theirs = coco_mask.decode(
            coco_mask.merge(coco_mask.frPyObjects([xy.ravel().tolist()], height, width))
        )
        differ = ours != theirs.astype(bool)
        # distance from each differing pixel centre to the nearest edge
        start, end = xy, np.roll(xy, -1, axis=0)
        points = np.column_stack([xx[differ], yy[differ]])[:, None, :]
        edge = end - start
        t = np.clip(((points - start) * edge).sum(-1) / (edge**2).sum(-1), 0, 1)
        distance = np.linalg.norm(points - (start + t[..., None] * edge), axis=-1).min(axis=1)
        assert (distance <= 1.0).all()
        assert differ.sum() <= 0.1 * ours.sum()


def test_detection_by_content_and_clear_errors(tmp_path, shared_data):
    path = _dataset(tmp_path)
    assert detect_kind(path) == "coco"
    assert open_source(path).kind == "coco"
    index = shared_data / "medseg" / "sa_med2d_demo_ct" / "image2label_train.json"
    renamed = tmp_path / "my_index.json"
    shutil.copy(index, renamed)
    assert detect_kind(renamed) == "sa-med2d" and detect_kind(index) == "sa-med2d"
    with pytest.raises(SourceError, match="unknown layout"):
        detect_kind(tmp_path / "meta.json")  # any .json is not an SA-Med2D index
    (tmp_path / "bad.json").write_text('{"images": []}')
    with pytest.raises(SourceError, match="not a COCO instances file"):
        open_source(f"coco:{tmp_path / 'bad.json'}")
    (tmp_path / "meta.json").unlink()
    with pytest.raises(SourceError, match="no modality"):
        open_source(f"coco:{path}")
    assert open_source(f"coco:{path}", modality="endoscopy").modality == "endoscopy"


def test_cli_builds_a_coco_file(tmp_path):
    from typer.testing import CliRunner

    from medground.cli import app

    path = _dataset(tmp_path / "data")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["build", f"coco:{path}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for f in sorted((out / "records").glob("*.jsonl")) for line in f.open()]
    assert sorted(r["id"] for r in records) == ["instances/a#0", "instances/b#0"]
    a = next(r for r in records if r["id"] == "instances/a#0")
    assert sorted((r["key"], r["box"]) for r in a["regions"]) == [
        ("cell", [20, 20, 26, 26]),
        ("cell", [32, 20, 38, 26]),
        ("instrument", [20, 2, 31, 7]),
        ("polyp", [5, 4, 35, 14]),
    ]
    assert a["case"] == "P7" and a["modality"] == "endoscopy"


def test_readme_layout_table_lists_every_registered_kind():
    from medground.data.sources import REGISTRY, Source

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    table = readme.split("| kind | layout |", 1)[1].split("\n\n", 1)[0]
    kinds = [line.split("`")[1] for line in table.splitlines() if line.startswith("| `")]
    assert sorted(kinds) == sorted(cls.kind for cls in REGISTRY)
    # every registered kind describes and detects itself
    assert all(cls.layout and cls.detect.__func__ is not Source.detect.__func__ for cls in REGISTRY)
