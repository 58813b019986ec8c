"""One message for a name that is not among the known choices (ground floor: imports nothing of ours).

Dialects, model families, export formats, source kinds, slice axes, body regions and tasks are all
chosen by name; a typo in any of them gets the same answer: what was asked, what is known, and the
closest known name when there is one.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["closest", "unknown_choice"]


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name most like ``name`` (difflib's ratio >= 0.6), or None."""
    match = difflib.get_close_matches(name, list(known), n=1)
    return match[0] if match else None


def unknown_choice(what: str, name: str, known: Iterable[str], listed: Iterable[str] | None = None) -> str:
    """``unknown dialect 'qwen25-vl'; known: qwen-vl, qwen2-vl. Did you mean 'qwen2-vl'?``

    ``known``: the names a hint may point at; ``listed``: the names the message lists (default ``known``;
    e.g. canonical names only, where ``known`` also holds aliases).
    """
    known = list(known)
    match = closest(name, known)
    hint = f" Did you mean {match!r}?" if match else ""
    return f"unknown {what} {name!r}; known: {', '.join(known if listed is None else listed)}.{hint}"
