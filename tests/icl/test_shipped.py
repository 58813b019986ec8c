"""The shipped default weights load and segment the bundled fetal-head images (held out in training)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from medground.demo import HC18_PAIRS
from medground.icl.segmenter import DEFAULT_WEIGHTS, InContextSegmenter


def _load(pair: tuple) -> tuple[np.ndarray, np.ndarray]:
    image, mask = pair
    return np.asarray(Image.open(image)), np.asarray(Image.open(mask)) > 0


def test_shipped_weights_are_small_and_describe_their_training() -> None:
    assert (DEFAULT_WEIGHTS / "model.safetensors").stat().st_size <= 20 * 1024 * 1024
    meta = json.loads((DEFAULT_WEIGHTS / "meta.json").read_text())
    assert meta["train_config"]["seed"] == 0 and len(meta["data_sha256"]) == 64
    assert (DEFAULT_WEIGHTS / "TRAINING.md").is_file()


def test_shipped_weights_segment_the_bundled_example() -> None:
    """Leave-one-out over the 6 bundled fetal-head images (5 supports -> the 6th). HC18 was held out in
    training; the shipped RidgeSeg weights (2026-12-01, enlarged collection) measured a mean Dice of 0.62
    here at their working size 256 (0.65 at 64, where they were trained; the earlier RidgeSeg weights 0.69,
    PoolSeg 0.42), so this is a regression bar, not a claim of quality."""
    seg = InContextSegmenter.from_pretrained()
    dices = []
    for query in HC18_PAIRS:
        support = [_load(pair) for pair in HC18_PAIRS if pair != query]
        image, truth = _load(query)
        prob = seg.segment(image, support=[(img, msk.astype(np.uint8)) for img, msk in support])
        assert prob.shape == truth.shape == (540, 800) and prob.dtype == np.float32
        pred = prob >= 0.5
        dices.append(2 * np.logical_and(pred, truth).sum() / (pred.sum() + truth.sum()))
    assert np.mean(dices) > 0.55, f"Dice {np.round(dices, 3)} on the bundled images"
