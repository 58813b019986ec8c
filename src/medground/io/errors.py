"""The one exception every medground reader raises for a file it cannot read."""

from __future__ import annotations

from pathlib import Path

__all__ = ["ReadError", "require_file"]


class ReadError(ValueError):
    """A file is missing, unreadable, corrupt, truncated or holds data medground cannot use.

    ``path`` is the file (or folder) as given, ``reason`` says what was found, what was expected and,
    where there is one, the fix. ``str(err)`` is ``"<path>: <reason>"``.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type[ReadError], tuple[str, str]]:
        # Keeps the two fields when the error crosses a process boundary (dask workers pickle it).
        return (type(self), (self.path, self.reason))


def require_file(path: str | Path) -> Path:
    """Return ``path`` as a Path if it is an existing regular file, else raise ReadError saying why."""
    p = Path(path)
    if not p.exists():
        raise ReadError(p, "file not found; check the path (relative paths start at the working directory)")
    if p.is_dir():
        raise ReadError(p, "is a folder, expected a file")
    return p
