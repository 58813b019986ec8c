"""The shipped models loaded once, and a real uvicorn server on a free loopback port for client tests."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from medground.icl.segmenter import InContextSegmenter
from medground.mllm.grounder import Grounder
from medground.serve.app import create_app
from medground.serve.batching import BatchingGrounder
from medground.serve.local import running

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "medground" / "sample" / "medseg"
CXR = SAMPLE / "shenzhen_cxr_lung_xray" / "images" / "CHNCXR_0008_0.png"  # 750 x 734 RGB PNG
HC18 = SAMPLE / "hc18_fetal_ultrasound"


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


@pytest.fixture(scope="session")
def models() -> tuple[Grounder, InContextSegmenter]:
    return Grounder.from_pretrained(), InContextSegmenter.from_pretrained()


@pytest.fixture(scope="session")
def server(models: tuple[Grounder, InContextSegmenter]) -> Iterator[str]:
    """Base URL of a uvicorn server over the shipped models, grounding batched as ``medground serve``
    does; stopped after the session."""
    grounder, segmenter = models
    with running(create_app(BatchingGrounder(grounder), segmenter)) as url:
        yield url
