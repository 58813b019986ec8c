"""Fixtures for the io tests: the shared real-data folder ``<repo>/../shared/data`` (skip when absent)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture
def data() -> Callable[..., Path]:
    """``data("medseg", "x", "y.png")`` -> the path under the shared data folder; skips the test if absent."""

    def resolve(*parts: str) -> Path:
        path = SHARED_DATA.joinpath(*parts)
        if not path.exists():
            pytest.skip(f"shared test data not found: {path}")
        return path

    return resolve
