"""A tiny data-engine output folder (3 records, 2 shards, 2 modalities) for tests of its consumers.

Hand-countable facts (used by the tests as expected values):
- images: ct 2 (a 64x48 grey, b 40x40 grey), fundus 1 (c 50x30 RGB); regions: ct 3, fundus 1
- splits: train 2 (a, c), val 1 (b)
- turns: rec 3 (1 negative), roc 1, mia 1
- skipped: "empty mask" x2, "unreadable image" x1
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["BOX_A_LIVER", "RECORD_IDS", "build_output"]

BOX_A_LIVER = [10, 8, 30, 20]
RECORD_IDS = ["demo_ct/a#0", "demo_ct/b#0", "demo_fundus/c#0"]


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _region(
    root: Path,
    source: str,
    stem: str,
    name: str,
    key: str,
    box: list[int],
    size: tuple[int, int],
    position: str,
) -> dict:
    w, h = size
    mask = np.zeros((h, w), np.uint8)
    mask[box[1] : box[3], box[0] : box[2]] = 255
    rel = f"masks/{source}/{stem}/{key}_000.png"
    _save_png(root / rel, mask)
    area = (box[2] - box[0]) * (box[3] - box[1])
    return {
        "name": name,
        "key": key,
        "box": box,
        "mask": rel,
        "instance": 0,
        "area": area,
        "position": position,
    }


def _record_a(root: Path) -> dict:
    w, h = 64, 48
    _save_png(root / "images/demo_ct/a.png", np.full((h, w), 60, np.uint8))
    regions = [
        _region(
            root, "demo_ct", "a", "liver", "liver", BOX_A_LIVER, (w, h), "in the upper left of the image"
        ),
        _region(
            root, "demo_ct", "a", "spleen", "spleen", [40, 10, 50, 30], (w, h), "on the right of the image"
        ),
    ]
    # qwen-vl grid by hand: floor(x * 1000 / w) for x0 and for the last pixel x1 - 1 (same for y with h)
    spleen_box = "<box>(625,208),(765,604)</box>"
    liver = "<ref>liver</ref><box>(156,166),(453,395)</box>"
    conv = [
        {"from": "human", "value": "<image>\nWhere is the liver?"},
        {"from": "gpt", "value": f"The {liver} is in the upper left of the image."},
        {"from": "human", "value": f"What is in {spleen_box}?"},
        {"from": "gpt", "value": "It is the spleen."},
        {"from": "human", "value": "Where is the left kidney?"},
        {"from": "gpt", "value": "There is no left kidney in this image."},
    ]
    turns = [
        {"task": "rec", "structure": "liver", "regions": [0], "negative": False},
        {"task": "roc", "structure": "spleen", "regions": [1], "negative": False},
        {"task": "rec", "structure": "left kidney", "regions": [], "negative": True},
    ]
    return {
        "id": RECORD_IDS[0],
        "image": "images/demo_ct/a.png",
        "width": w,
        "height": h,
        "modality": "ct",
        "source": "demo_ct",
        "case": "a",
        "split": "train",
        "plane": "axial",
        "body_region": "abdomen",
        "dialect": "qwen-vl",
        "tasks": ["rec", "roc"],
        "conversations": conv,
        "turns": turns,
        "regions": regions,
    }


def _record_b(root: Path) -> dict:
    w, h = 40, 40
    _save_png(root / "images/demo_ct/b.png", np.full((h, w), 120, np.uint8))
    regions = [
        _region(root, "demo_ct", "b", "liver", "liver", [5, 5, 25, 35], (w, h), "on the left of the image")
    ]
    liver = "<ref>liver</ref><box>(125,125),(600,850)</box>"
    conv = [{"from": "human", "value": "<image>\nFind the liver."}, {"from": "gpt", "value": f"The {liver}."}]
    turns = [{"task": "rec", "structure": "liver", "regions": [0], "negative": False}]
    return {
        "id": RECORD_IDS[1],
        "image": "images/demo_ct/b.png",
        "width": w,
        "height": h,
        "modality": "ct",
        "source": "demo_ct",
        "case": "b",
        "split": "val",
        "plane": None,
        "body_region": None,
        "dialect": "qwen-vl",
        "tasks": ["rec"],
        "conversations": conv,
        "turns": turns,
        "regions": regions,
    }


def _record_c(root: Path) -> dict:
    w, h = 50, 30
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = 150
    _save_png(root / "images/demo_fundus/c.png", image)
    regions = [
        _region(
            root,
            "demo_fundus",
            "c",
            "optic disc",
            "optic_disc",
            [30, 10, 40, 20],
            (w, h),
            "on the right of the image",
        )
    ]
    conv = [
        {"from": "human", "value": "<image>\nDescribe this image."},
        {"from": "gpt", "value": "A fundus photograph showing the optic disc."},
    ]
    turns = [{"task": "mia", "structure": "", "regions": [0], "negative": False}]
    return {
        "id": RECORD_IDS[2],
        "image": "images/demo_fundus/c.png",
        "width": w,
        "height": h,
        "modality": "fundus",
        "source": "demo_fundus",
        "case": "c",
        "split": "train",
        "plane": None,
        "body_region": "eye",
        "dialect": "qwen-vl",
        "tasks": ["mia"],
        "conversations": conv,
        "turns": turns,
        "regions": regions,
    }


def build_output(root: Path) -> Path:
    """Write the 3-record output folder under ``root`` and return ``root``."""
    records = [_record_a(root), _record_b(root), _record_c(root)]
    shards = root / "records"
    shards.mkdir(parents=True, exist_ok=True)
    with open(shards / "shard-00000.jsonl", "w") as f:
        for rec in records[:2]:
            f.write(json.dumps(rec) + "\n")
    with open(shards / "shard-00001.jsonl", "w") as f:
        f.write(json.dumps(records[2]) + "\n")
    skipped = [
        {"input": "x/1.png", "reason": "empty mask", "source": "demo_ct"},
        {"input": "x/2.png", "reason": "empty mask", "source": "demo_ct"},
        {"input": "y/3.png", "reason": "unreadable image", "source": "demo_fundus"},
    ]
    (root / "skipped.jsonl").write_text("".join(json.dumps(s) + "\n" for s in skipped))
    (root / "manifest.json").write_text(
        json.dumps({"version": 1, "records": 3, "sources": ["demo_ct", "demo_fundus"]})
    )
    return root
