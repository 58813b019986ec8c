"""Package attributes imported on first use (PEP 562 module ``__getattr__``).

``medground.eval``, ``medground.icl`` and ``medground.mllm`` name their public classes at package level,
but importing them there would load scipy or torch whenever the CLI imports one of their command
modules; each package instead maps its public names to the modules that define them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``where[name]`` (a module path) on first use."""

    def attribute(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return attribute
