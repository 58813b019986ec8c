"""Tiny synthetic data-engine output: bright shapes on dark images, records in the qwen-vl-grid dialect."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medground.grounding import get_dialect
from medground.types import Box

SHAPES = (("liver", (6, 8, 30, 28)), ("spleen", (34, 20, 58, 40)))


def make_dataset(root: Path, n_images: int = 2, width: int = 64, height: int = 48) -> Path:
    """Write ``n_images`` images, each with a liver and a spleen box, as data-engine records.

    Image i shifts both shapes by 2*i pixels; image 0 is gray, the others RGB. Every record has a REC
    turn (liver -> box) and a ROC turn (spleen's box -> name); odd images are split "test".
    """
    tag = get_dialect("qwen-vl-grid")
    (root / "images" / "syn").mkdir(parents=True, exist_ok=True)
    (root / "records").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n_images):
        pixels = np.zeros((height, width), np.uint8)
        regions = []
        for value, (name, (x0, y0, x1, y1)) in zip((200, 120), SHAPES, strict=True):
            box = Box(x0 + 2 * i, y0, x1 + 2 * i, y1)
            pixels[box.y0 : box.y1, box.x0 : box.x1] = value
            regions.append({"name": name, "key": name, "box": box.as_list(), "instance": 0, "area": box.area})
        image = Image.fromarray(pixels) if i == 0 else Image.fromarray(np.stack([pixels] * 3, -1))
        image.save(root / "images" / "syn" / f"img{i}.png")
        liver, spleen = (Box.from_list(r["box"]) for r in regions)
        convs = [
            {"from": "human", "value": "<image>\nWhere is the liver?"},
            {"from": "gpt", "value": f"The {tag.ground('liver', [liver], width, height)} is here."},
            {"from": "human", "value": f"What is at {tag.box(spleen, width, height)}?"},
            {"from": "gpt", "value": "It is the spleen."},
        ]
        lines.append(
            {
                "id": f"syn/img{i}#0",
                "image": f"images/syn/img{i}.png",
                "width": width,
                "height": height,
                "modality": "ct",
                "source": "syn",
                "case": f"c{i}",
                "split": "test" if i % 2 else "train",
                "dialect": "qwen-vl-grid",
                "tasks": ["rec", "roc"],
                "conversations": convs,
                "turns": [
                    {"task": "rec", "structure": "liver", "regions": [0], "negative": False},
                    {"task": "roc", "structure": "spleen", "regions": [1], "negative": False},
                ],
                "regions": regions,
            }
        )
    with (root / "records" / "shard-00000.jsonl").open("w") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in lines)
    return root


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data", n_images=2)


FAMILY_NAMES = ("qwen2-vl", "qwen2.5-vl", "qwen3-vl")
TINY = {"hidden_size": 64, "intermediate_size": 128, "vocab_size": 400, "vision_width": 32}


def train_tiny(data: Path, out: Path, family: str, steps: int = 150, **extra: object):
    """Overfit a tiny ``family`` model on ``data``'s train split (about a second of CPU per 100 steps)."""
    import torch

    from medground.mllm.train import TrainConfig, train

    torch.set_num_threads(1)
    options: dict = {
        "max_steps": steps,
        "lr": 3e-3,
        "batch_size": 2,
        "logging_steps": 10,
        "max_pixels": 64 * 64,
        "save_steps": 10_000,
        "tiny": dict(TINY),
    } | extra
    cfg = TrainConfig(data=str(data), base="tiny", out=str(out), family=family, **options)
    return train(cfg)


@pytest.fixture(scope="session")
def overfit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """family -> folder of a tiny model overfit on a 4-image synthetic set (2 train images)."""
    root = tmp_path_factory.mktemp("overfit")
    data = make_dataset(root / "data", n_images=4)
    return {"data": data} | {f: train_tiny(data, root / f, f).out for f in FAMILY_NAMES}
