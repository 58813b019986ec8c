"""Patient keys that are identifiers (a DICOM PatientID) written as keyed-hash pseudonyms.

The split is drawn from the key as read (so pseudonymising changes no split); records and everything
made from them (exports, reports) carry ``pid-`` + the first 16 hex digits of HMAC-SHA256(key, patient
key). The secret key never enters a build: it comes from ``MEDGROUND_CASE_KEY`` (any text), else from the
file ``$XDG_CONFIG_HOME/medground/case_key`` (default ``~/.config/medground/case_key``), created with 32
random bytes and mode 0600 on first use. Keep that file to get the same pseudonyms in later builds (one
patient through two builds then has one key); delete it to make the link between builds unrecoverable.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
from pathlib import Path

__all__ = ["CASE_KEY_ENV", "case_key_path", "pseudonym"]

CASE_KEY_ENV = "MEDGROUND_CASE_KEY"


def case_key_path() -> Path:
    """Where the secret key is kept when ``MEDGROUND_CASE_KEY`` is not set."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "medground" / "case_key"


@functools.lru_cache(maxsize=4)
def _key(env: str | None, path: Path) -> bytes:
    if env:
        return env.encode("utf-8")
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"{path} is empty; delete it (a new key is made) or set {CASE_KEY_ENV}")
    return text.encode("utf-8")


def pseudonym(case: str) -> str:
    """``pid-<16 hex>``: a keyed hash of the patient key ``case`` (same key and case, same pseudonym)."""
    key = _key(os.environ.get(CASE_KEY_ENV), case_key_path())
    return "pid-" + hmac.new(key, case.encode("utf-8"), hashlib.sha256).hexdigest()[:16]
