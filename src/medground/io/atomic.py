"""Atomic file writes: write a temporary file in the target folder, fsync it, then ``os.replace``.

A reader never sees a half-written file: the target path holds either the old content or the new one.
Parent folders are created. Files get the usual ``0o666 & ~umask`` permissions (not mkstemp's 0600).
``fsync=False`` keeps the atomic replace but skips both fsyncs: for files whose loss in a crash a later
check detects (make them durable later with :func:`fsync_path`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_output", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "fsync_path"]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()


def _full_suffix(name: str) -> str:
    """``"a.nii.gz" -> ".nii.gz"``, ``"a.png" -> ".png"``: keeps libraries that pick a format by suffix happy."""
    suffixes = Path(name).suffixes
    return "".join(suffixes[-2:]) if suffixes[-1:] == [".gz"] else "".join(suffixes[-1:])


def fsync_path(path: str | Path) -> None:
    """fsync a file, or a folder (skipped where the platform or filesystem cannot sync a folder)."""
    is_dir = Path(path).is_dir()
    try:
        fd = os.open(path, os.O_RDONLY if is_dir else os.O_RDWR)  # some platforms sync writable files only
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        if not is_dir:
            raise


@contextlib.contextmanager
def atomic_output(path: str | Path, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); on success fsync it and move it onto ``path``.

    For libraries that write to a file name themselves (``nib.save(img, tmp)``). On an exception the
    temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp" + _full_suffix(target.name), dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        if fsync:
            fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if fsync:
        fsync_path(target.parent)


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + os.replace), creating parent folders."""
    with atomic_output(path, fsync=fsync) as tmp, open(tmp, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = True) -> None:
    """Write ``text`` as UTF-8 (newlines kept as given, no platform translation) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_json(path: str | Path, obj: Any, *, fsync: bool = True) -> None:
    """Write ``obj`` as JSON atomically: insertion key order, ``ensure_ascii=False``, indent 2, final newline.

    Raises TypeError (from ``json``) for values JSON cannot hold; NaN/inf are refused (ValueError) so the
    file stays valid JSON for every reader.
    """
    text = json.dumps(obj, ensure_ascii=False, indent=2, allow_nan=False) + "\n"
    atomic_write_text(path, text, fsync=fsync)
