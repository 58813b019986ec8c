"""Cheap looks into index files for layout detection: a header line or the start of a JSON file.

Detection runs once per source in the planning process; index files can be gigabytes (SA-Med2D-20M's
JSON), so nothing here reads more than the first few kilobytes.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

__all__ = ["csv_header", "json_first_entry"]

_HEAD_BYTES = 65536
_FIRST_ENTRY = re.compile(r'\A\s*\{\s*("(?:[^"\\]|\\.)*")\s*:\s*(\[\s*)?(\S)?', re.DOTALL)


def csv_header(path: Path) -> list[str]:
    """The column names of a CSV file (its first row); [] for a missing or empty file."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return [name.strip() for name in next(csv.reader(handle), [])]


def json_first_entry(path: Path) -> tuple[str, str] | None:
    """(first key, shape of its value) of a file holding a JSON object, from the file's first 64 KiB.

    The shape is ``"string"``, ``"list of strings"``, ``"empty list"`` or ``"other"`` (objects, numbers,
    lists of objects ...); ``None`` when the file is not a ``.json`` file or does not start as a JSON
    object with a key.
    """
    if not path.is_file() or path.suffix.lower() != ".json":
        return None
    with open(path, "rb") as handle:
        head = handle.read(_HEAD_BYTES).decode("utf-8", errors="replace")
    match = _FIRST_ENTRY.match(head)
    if not match:
        return None
    try:
        key = json.loads(match[1])
    except ValueError:  # an invalid escape in the key
        return None
    opened_list, first = match[2] is not None, match[3]
    if first == '"':
        return key, "list of strings" if opened_list else "string"
    if opened_list and first == "]":
        return key, "empty list"
    return key, "other"
