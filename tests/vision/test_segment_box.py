"""``segment --box`` and the segmenter facade: BoxSeg by default (the bench's ship rule), LiteMedSAM on request."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medground.cli import app
from medground.icl.boxprompt import BoxSeg, BoxSegConfig
from medground.icl.segmenter import InContextSegmenter
from medground.vision.predictor import ImageEncoder


def _disc() -> tuple[np.ndarray, np.ndarray, list[int]]:
    """A bright disc (radius 20 at (60, 50)) on a noisy dark 100 x 130 background, its mask and tight box."""
    yy, xx = np.mgrid[:100, :130]
    truth = (xx - 60) ** 2 + (yy - 50) ** 2 <= 20**2
    noise = np.random.default_rng(0).normal(0, 8, truth.shape)
    image = np.clip(40 + 150 * truth + noise, 0, 255).astype(np.uint8)
    return image, truth, [40, 30, 81, 71]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_box_alone_goes_to_boxseg_by_default_and_litemedsam_on_request(encoder: ImageEncoder) -> None:
    image, truth, box = _disc()
    boxseg = BoxSeg(BoxSegConfig(size=32, widths=(4, 8)))  # untrained: returns the inscribed ellipse
    assert InContextSegmenter(boxseg).box_engine == "boxseg"  # the default, by the bench's ship rule
    seg = InContextSegmenter(boxseg, box_model=boxseg, box_engine="litemedsam", image_encoder=encoder)
    prob = seg.segment(image, box=box)
    np.testing.assert_array_equal(prob, encoder.segment_box(image, box))
    assert prob.shape == (100, 130) and _dice(prob >= 0.5, truth) > 0.9
    seg.box_engine = "boxseg"
    ellipse = seg.segment(image, box=box) >= 0.5
    assert not np.array_equal(ellipse, prob >= 0.5)
    with pytest.raises(ValueError, match="boxseg, litemedsam"):
        InContextSegmenter(boxseg, box_engine="sam")


def test_cli_segment_box_writes_litemedsam_mask_and_refuses_unknown_engine(tmp_path, encoder) -> None:
    image, truth, box = _disc()
    Image.fromarray(image).save(tmp_path / "q.png")
    args = [
        "segment",
        "--query",
        str(tmp_path / "q.png"),
        "--out",
        str(tmp_path / "o"),
        "--box",
        "40,30,81,71",
    ]
    result = CliRunner().invoke(app, [*args, "--box-model", "litemedsam"])
    assert result.exit_code == 0, result.output
    mask = np.asarray(Image.open(tmp_path / "o/q.png")) > 0
    np.testing.assert_array_equal(mask, encoder.segment_box(image, box) >= 0.5)
    bad = CliRunner().invoke(app, [*args[:-2], "--box", "40,30,81,71", "--box-model", "sam"])
    assert bad.exit_code != 0 and "boxseg, litemedsam" in bad.output
