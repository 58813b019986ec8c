"""Tests of medground.io.atomic: atomic writes leave either the old or the new file, never a temp file."""

from __future__ import annotations

import json
import os
import stat

import pytest

from medground.io import atomic_output, atomic_write_bytes, atomic_write_json, atomic_write_text, fsync_path


def test_write_bytes_creates_parents_and_replaces(tmp_path):
    path = tmp_path / "deep" / "er" / "file.bin"
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert [p.name for p in path.parent.iterdir()] == ["file.bin"]


def test_permissions_follow_umask_not_mkstemp_0600(tmp_path):
    mask = os.umask(0)  # read the process umask (the module read it the same way at import)
    os.umask(mask)
    atomic_write_bytes(tmp_path / "f", b"x")
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o666 & ~mask


def test_write_text_utf8_keeps_newlines(tmp_path):
    atomic_write_text(tmp_path / "t.txt", "héllo\r\nworld\n")
    assert (tmp_path / "t.txt").read_bytes() == "héllo\r\nworld\n".encode()


def test_write_json_format(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"zeta": 1, "alpha": ["ü", 2.5]})
    expected = '{\n  "zeta": 1,\n  "alpha": [\n    "ü",\n    2.5\n  ]\n}\n'
    assert path.read_text(encoding="utf-8") == expected
    assert json.loads(path.read_text(encoding="utf-8")) == {"zeta": 1, "alpha": ["ü", 2.5]}


def test_write_json_refuses_nan_and_keeps_old_file(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"ok": True})
    with pytest.raises(ValueError):
        atomic_write_json(path, {"bad": float("nan")})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_atomic_output_failure_leaves_target_and_no_temp(tmp_path):
    path = tmp_path / "vol.nii.gz"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".nii.gz") and tmp != path
        tmp.write_bytes(b"partial")
        raise RuntimeError("writer crashed")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["vol.nii.gz"]


def test_atomic_output_success(tmp_path):
    path = tmp_path / "sub" / "a.png"
    with atomic_output(path) as tmp:
        assert tmp.name.endswith(".png")
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in path.parent.iterdir()] == ["a.png"]


def test_without_fsync_the_replace_is_still_atomic(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    path = tmp_path / "part.json"
    atomic_write_json(path, {"a": 1}, fsync=False)
    atomic_write_json(path, {"a": 2}, fsync=False)
    assert json.loads(path.read_text()) == {"a": 2} and [p.name for p in tmp_path.iterdir()] == ["part.json"]
    assert synced == []
    atomic_write_bytes(path, b"{}")
    assert len(synced) == 2  # the file, then its folder


def test_fsync_path_takes_files_and_folders_and_names_a_missing_file(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    fsync_path(tmp_path / "f")
    fsync_path(tmp_path)
    with pytest.raises(FileNotFoundError):
        fsync_path(tmp_path / "missing")
