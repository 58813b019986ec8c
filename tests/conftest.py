"""Fixtures of the whole suite: the shared data folder, and the registries as extension points."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

REGISTRIES: tuple[tuple[str, str], ...] = (
    ("medground.tasks", "TASKS"),
    ("medground.grounding", "DIALECTS"),
    ("medground.data.sources", "REGISTRY"),
    ("medground.data.sources", "SOURCES"),
    ("medground.data.export", "EXPORTERS"),
    ("medground.mllm.families", "FAMILIES"),
)
"""(module, attribute) of every registry a test may extend: the lists a new task, dialect, source layout,
export format or model family is added to."""

TOY_PREFIX = "toy-"
"""Names of toy entries start with this; no real entry's name does (checked in test_task_registry)."""


def box_region(
    name: str, box: tuple[int, int, int, int], instance: int = 0, size: tuple[int, int] = (200, 120)
):
    """A rectangular region (mask = its box) named ``name`` on an image of ``size`` (width, height)."""
    import numpy as np

    from medground.types import Box, Region

    b = Box(*box)
    mask = np.zeros((size[1], size[0]), dtype=bool)
    mask[b.y0 : b.y1, b.x0 : b.x1] = True
    return Region(name, name, b, mask, instance, b.area, "in the centre of the image")


def cli_help(*command: str) -> str:
    """``medground COMMAND --help`` as one line of words: rich's panel borders and line wrapping removed."""
    from typer.testing import CliRunner

    from medground.cli import app

    output = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "400"}).output
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


@pytest.fixture
def shared_data() -> Path:
    """The read-only shared collection beside the repository (skips when absent)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


class Registries:
    """What :func:`registries` yields: ``add`` puts a toy entry into a registry dict for one test."""

    def add(self, registry: dict[str, Any], name: str, entry: Any) -> Any:
        """Register ``entry`` under ``name`` (appended, as a contributor's new line would be); returns it.

        The name must start with :data:`TOY_PREFIX` and be free, so a toy never shadows a real entry.
        """
        if not name.startswith(TOY_PREFIX):
            raise ValueError(f"toy registry name {name!r} must start with {TOY_PREFIX!r}")
        if name in registry:
            raise ValueError(f"{name!r} is already registered")
        registry[name] = entry
        return entry


def _snapshot(value: Any) -> Any:
    """A dict registry's (name, entry) pairs in order; any other registry (a tuple) is immutable itself."""
    return list(value.items()) if isinstance(value, dict) else value


@pytest.fixture
def registries() -> Iterator[Registries]:
    """Snapshot every registry of :data:`REGISTRIES` and restore it after the test: the same object
    (modules hold references to it) with its contents and order, whatever the test added, removed,
    moved or rebound."""
    saved = []
    for module_name, attribute in REGISTRIES:
        module = importlib.import_module(module_name)
        original = getattr(module, attribute)
        saved.append((module, attribute, original, _snapshot(original)))
    try:
        yield Registries()
    finally:
        for module, attribute, original, snapshot in saved:
            if isinstance(original, dict):
                original.clear()
                original.update(snapshot)
            setattr(module, attribute, original)
