"""Our LiteMedSAM modules against the wheel's own (fixture made by bench/make_litemedsam_fixture.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import medground
from medground.vision.fast import inference_encoder, served_encoder
from medground.vision.model import LiteMedSAM
from medground.vision.predictor import ImageEncoder
from medground.vision.tinyvit import WindowAttention

SAMPLE_ROOT = Path(medground.__file__).resolve().parent / "sample" / "medseg"
SAMPLES = [  # (folder, image, mask, least Dice: measured 0.971, 0.801, 0.885 on 2026-12-08)
    (
        "kvasir_seg_endoscopy",
        "images/cju0qkwl35piu0993l0dewei2.jpg",
        "masks/cju0qkwl35piu0993l0dewei2.png",
        0.9,
    ),
    (
        "hc18_fetal_ultrasound",
        "images/000_HC.png",
        "masks/000_HC_mask.png",
        0.75,
    ),  # below the ellipse (0.959)
    ("shenzhen_cxr_lung_xray", "images/CHNCXR_0001_0.png", "masks/CHNCXR_0001_0_lungs.png", 0.85),
]


@pytest.fixture(scope="module")
def ours(litemedsam: LiteMedSAM, fixture: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (4, 3, 256, 256), our embeddings (4, 256, 64, 64)) for the fixture's inputs."""
    images = torch.from_numpy(fixture["inputs"]).float() / 255
    with torch.inference_mode():
        return images, litemedsam.encode(images)


def test_embeddings_match_the_wheel(ours, fixture) -> None:
    _, emb = ours
    diff = (emb[:, ::8] - torch.from_numpy(fixture["embeddings"])).abs().max().item()
    assert diff <= 1e-4


def test_logits_and_masks_match_the_wheel(litemedsam, ours, fixture) -> None:
    _, emb = ours
    for i in range(len(emb)):
        with torch.inference_mode():
            logits, _ = litemedsam.decode_boxes(emb[i : i + 1], torch.from_numpy(fixture["boxes"][i]))
        assert (logits[:, ::2, ::2] - torch.from_numpy(fixture["logits"][i])).abs().max().item() <= 1e-3
        masks = np.unpackbits(fixture["masks"][i], axis=-1).astype(bool)
        assert masks.any(axis=(1, 2)).all()  # the fixture's masks are not trivially empty
        np.testing.assert_array_equal((logits > 0).numpy(), masks)


def _assert_matches_fixture(litemedsam: LiteMedSAM, emb: torch.Tensor, fixture: dict) -> None:
    """Embeddings (4, 256, 64, 64) within 1e-4 of the wheel's, decoded logits within 1e-3, masks identical."""
    assert (emb[:, ::8] - torch.from_numpy(fixture["embeddings"])).abs().max().item() <= 1e-4
    for i in range(len(emb)):
        with torch.inference_mode():
            logits, _ = litemedsam.decode_boxes(emb[i : i + 1], torch.from_numpy(fixture["boxes"][i]))
        assert (logits[:, ::2, ::2] - torch.from_numpy(fixture["logits"][i])).abs().max().item() <= 1e-3
        np.testing.assert_array_equal(
            (logits > 0).numpy(), np.unpackbits(fixture["masks"][i], axis=-1).astype(bool)
        )


def test_served_fast_encoder_matches_the_wheel(litemedsam, ours, fixture) -> None:
    """The folded channels-last copy (what ImageEncoder.from_pretrained serves) passes the same fixture."""
    images, _ = ours
    with torch.inference_mode():
        emb = inference_encoder(litemedsam.image_encoder)(images)
    _assert_matches_fixture(litemedsam, emb, fixture)


def test_onnx_runtime_encoder_matches_the_wheel(litemedsam, ours, fixture, tmp_path) -> None:
    """The ONNX Runtime path (served when onnxruntime is installed) passes the same fixture; its export is
    cached beside the weights, named by their hash, and reused."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")  # torch's exporter
    from medground.vision.onnx import onnx_encoder

    images, _ = ours
    run = onnx_encoder(litemedsam.image_encoder, litemedsam.image_size, tmp_path, threads=1)
    (cached,) = tmp_path.glob("litemedsam-79d8c9dca6db4d69/encoder-*.onnx")
    emb = run(images)
    _assert_matches_fixture(litemedsam, emb, fixture)
    stamp = cached.stat().st_mtime_ns
    again = onnx_encoder(litemedsam.image_encoder, litemedsam.image_size, tmp_path, threads=1)
    assert cached.stat().st_mtime_ns == stamp  # read from the cache, not exported again
    assert torch.equal(again(images[:1]), emb[:1])


def test_served_encoder_falls_back_to_folded_torch_without_onnxruntime(litemedsam, monkeypatch) -> None:
    monkeypatch.setattr("medground.vision.onnx.onnxruntime_available", lambda: False)
    assert isinstance(served_encoder(litemedsam.image_encoder), torch.nn.Module)


def test_a_transposed_bias_index_breaks_equivalence(litemedsam, ours, fixture) -> None:
    """The bias slot is |dy| * w + |dx|; |dx| * w + |dy| (same shapes) must not pass the fixture."""
    images, _ = ours
    blocks = [m for m in litemedsam.modules() if isinstance(m, WindowAttention)]
    saved = [b.bias_index.clone() for b in blocks]
    try:
        for b in blocks:
            w = int(round(b.bias_index.shape[0] ** 0.5))
            idx = b.bias_index
            b.bias_index = (idx % w) * w + idx // w
        with torch.inference_mode():
            emb = litemedsam.encode(images[:1])
    finally:
        for b, s in zip(blocks, saved, strict=True):
            b.bias_index = s
    assert (emb[:, ::8] - torch.from_numpy(fixture["embeddings"][:1])).abs().max().item() > 1e-2


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.mark.parametrize(("folder", "image", "mask", "least"), SAMPLES)
def test_tight_box_segments_the_bundled_samples(encoder: ImageEncoder, folder, image, mask, least) -> None:
    """Whole pipeline from the file's pixels: a box at the truth's extent gives a mask close to the truth."""
    root = SAMPLE_ROOT / folder
    img = np.asarray(Image.open(root / image))
    truth = np.asarray(Image.open(root / mask)) > 0
    ys, xs = np.nonzero(truth)
    box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    prob = encoder.segment_box(img, box)
    assert prob.shape == truth.shape and prob.dtype == np.float32
    assert _dice(prob >= 0.5, truth) >= least
