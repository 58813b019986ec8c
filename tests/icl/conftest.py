"""Fixtures for the in-context segmentation tests: tiny models, a fake text encoder, a fake engine output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from icl_helpers import FakeTextEncoder, disc, tiny_ridgeseg
from PIL import Image

from medground.icl.model import PoolSeg, PoolSegConfig
from medground.icl.segmenter import InContextModel, InContextSegmenter


@pytest.fixture(params=["ridgeseg", "poolseg"])
def tiny_model(request) -> InContextModel:
    """Each in-context architecture at a tiny width (tests using it run once per architecture)."""
    if request.param == "ridgeseg":
        return tiny_ridgeseg()
    torch.manual_seed(0)
    return PoolSeg(PoolSegConfig(size=32, widths=(4, 8, 8), global_dim=8, attn_dim=4)).eval()


@pytest.fixture
def segmenter(tiny_model: InContextModel) -> InContextSegmenter:
    return InContextSegmenter(tiny_model, text_encoder=FakeTextEncoder())


@pytest.fixture
def engine_dir(tmp_path: Path) -> Path:
    """A miniature `medground build` output: 3 images of source 'demo', key 'hip_left' with 2 instances
    on the first image, key 'liver' on two images; each image is its own patient."""
    root = tmp_path / "engine"
    (root / "records").mkdir(parents=True)
    lines = []
    for i in range(3):
        stem = f"img{i}"
        (root / "images/demo").mkdir(parents=True, exist_ok=True)
        (root / f"masks/demo/{stem}").mkdir(parents=True, exist_ok=True)
        image = (disc(48, 48, 20, 25, 10) * 200 + 20).astype(np.uint8)
        Image.fromarray(image).save(root / f"images/demo/{stem}.png")
        regions = []
        masks = {("hip_left", 0): disc(48, 48, 10, 10, 4)}
        if i == 0:
            masks[("hip_left", 1)] = disc(48, 48, 30, 40, 3)
        if i < 2:
            masks[("liver", 0)] = disc(48, 48, 20, 25, 8)
        for (key, inst), mask in masks.items():
            rel = f"masks/demo/{stem}/{key}_{inst:03d}.png"
            Image.fromarray((mask * 255).astype(np.uint8)).save(root / rel)
            regions.append(
                {
                    "name": key.replace("_", " "),
                    "key": key,
                    "mask": rel,
                    "instance": inst,
                    "area": int(mask.sum()),
                }
            )
        lines.append(
            json.dumps(
                {
                    "id": f"demo/{stem}#0",
                    "image": f"images/demo/{stem}.png",
                    "source": "demo",
                    "case": f"patient{i}",
                    "regions": regions,
                }
            )
        )
    (root / "records/shard-00000.jsonl").write_text("\n".join(lines) + "\n")
    return root
