"""The COCO source streams its instances file: annotations in any order are grouped by image in a fixed
order, and opening and planning a file holds far less than the file in memory."""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image

from medground.data.sources import Item, open_source
from medground.types import Rejected, Sample


def _square(x: int, y: int, side: int = 4) -> list[float]:
    return [x, y, x + side, y, x + side, y + side, x, y + side]


def _write(root: Path, images: int, per_image: int, seed: int, note: int = 0) -> tuple[Path, dict]:
    """A COCO file whose ``images`` list is shuffled and whose annotations are interleaved across images
    (never grouped), plus one annotation of an unknown image and one of an unknown category. Returns the
    path and the truth: image file name -> its annotation ids in file order. ``note``: characters of
    an extra text field per annotation (COCO files carry such fields; the source ignores them)."""
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((20, 24), np.uint8)
    entries = []
    for i in range(images):
        name = f"img_{i:04d}.png"
        Image.fromarray(pixels).save(root / "images" / name)
        entries.append({"id": 100 + i, "file_name": name, "width": 24, "height": 20})
    rng.shuffle(entries)
    annotations = [
        {"id": 1000 * (i + 1) + k, "image_id": 100 + i, "category_id": 1 + k % 2, "iscrowd": 0}
        for i in range(images)
        for k in range(per_image)
    ]
    rng.shuffle(annotations)
    for a in annotations:
        k = a["id"] % 1000
        a["segmentation"] = [_square(2 + 5 * (k % 4), 2 + 5 * (k // 4 % 3))]
        if note:
            a["note"] = f"{a['id']}:" + "x" * note
    annotations.insert(
        len(annotations) // 2, {"id": 7, "image_id": 99999, "category_id": 1, "segmentation": [[]]}
    )
    annotations.insert(1, {"id": 8, "image_id": 100, "category_id": 5, "segmentation": [[]]})
    truth: dict[str, list[int]] = {}
    by_id = {e["id"]: e["file_name"] for e in entries}
    for a in annotations:
        if a["image_id"] in by_id and a["category_id"] in (1, 2):
            truth.setdefault(by_id[a["image_id"]], []).append(a["id"])
    data = {
        "annotations": annotations,  # before the images and categories: the order of keys is free
        "images": entries,
        "categories": [{"id": 2, "name": "cell"}, {"id": 1, "name": "gland"}],
    }
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    (root / "meta.json").write_text(json.dumps({"modality": "histopathology", "cases": "image"}))
    return path, truth


def test_interleaved_annotations_are_grouped_by_image_in_file_name_order(tmp_path):
    path, truth = _write(tmp_path, images=12, per_image=5, seed=1)
    source = open_source(f"coco:{path}")
    found = list(source.items())
    rejected = [r for r in found if isinstance(r, Rejected)]
    items = [i for i in found if isinstance(i, Item)]
    assert [r.reason for r in rejected] == [
        "category_id 5 is not among the categories",  # annotation 8 comes first in the file
        "image_id 99999 is not among the images",
    ]
    assert [Path(i.payload["image"]).name for i in items] == sorted(truth)
    for item in items:
        ids = [a[0] for a in item.payload["annotations"]]
        assert ids == truth[Path(item.payload["image"]).name]
        assert {a[1] for a in item.payload["annotations"]} == {"gland", "cell"}
    again = [i.payload["annotations"] for i in open_source(f"coco:{path}").items() if isinstance(i, Item)]
    assert again == [i.payload["annotations"] for i in items]
    sample = next(r for r in source.load(items[0]) if isinstance(r, Sample))
    assert sorted(s.name for s in sample.structures) == ["cell", "cell", "gland", "gland", "gland"]
    assert source.protocols() == {source.name: ["cell", "gland"]}


def test_planning_a_large_file_holds_a_fraction_of_it_in_memory(tmp_path):
    path, truth = _write(tmp_path, images=100, per_image=20, seed=2, note=4000)
    size = path.stat().st_size
    assert size > 8_000_000
    tracemalloc.start()
    try:
        source = open_source(f"coco:{path}")
        count = sum(isinstance(item, Item) for item in source.items())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == len(truth) == 100
    # json.load would hold the whole file decoded (more than its size); streaming holds one entry at a time
    assert peak < size / 8, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"
