"""Optional LLM rewriting of question/answer phrasing, verified so that no name or box is lost or changed.

Any OpenAI-compatible endpoint works (``POST {url}/chat/completions`` with ``{"model", "messages",
"temperature": 0, "seed"}``; vLLM, llama.cpp server, Ollama, ...) through ``urllib`` only. Every answer
is cached on disk as ``cache_dir/<sha256 of [model, messages]>.json``, so a rerun makes no request. A
rewrite is used only when ``verify_rewrite`` accepts it; otherwise, and on any network error, the
original text is kept and the reason returned (a build never fails because of the rewriter).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from medground.grounding import Dialect, get_dialect

__all__ = ["DEFAULT_INSTRUCTIONS", "Rewriter", "protected_spans", "rewrite_record", "verify_rewrite"]

IMAGE_TOKEN = "<image>"
MAX_GROWTH = 3  # a rewrite longer than this many times the original is rejected
DEFAULT_INSTRUCTIONS = (
    "You rewrite sentences from a medical image dataset with different wording and the same meaning. "
    "Copy every protected span exactly, character for character, as many times as it occurs in the text. "
    "Do not add structure names, boxes or facts. Reply with the rewritten text only."
)


def protected_spans(text: str, dialect: Dialect) -> list[str]:
    """Every ``<image>`` and every reference and box string of ``dialect`` in ``text``, in reading order.

    E.g. ``<ref>liver</ref>`` and ``<box>(1,2),(3,4)</box>`` for qwen-vl-grid, ``{"bbox_2d": [1, 2, 3, 4],
    "label": "liver"}`` for qwen3-vl-norm1000; repeated strings are listed once per occurrence. Only the
    text's own dialect is looked for, so another dialect's pattern never changes what is protected.
    """
    pattern = re.compile(f"{re.escape(IMAGE_TOKEN)}|{dialect.protected_pattern.pattern}", re.DOTALL)
    return [m.group(0) for m in pattern.finditer(text)]


def verify_rewrite(original: str, rewritten: str, protected: list[str]) -> str | None:
    """Why ``rewritten`` may not replace ``original``, or None when it may.

    Rejected: an empty rewrite, one longer than MAX_GROWTH x the original, or one in which a protected
    string (exact substring: a structure name, a box string) occurs a different number of times than
    in the original (dropped, changed, duplicated or newly added).
    """
    if not rewritten.strip():
        return "empty rewrite"
    if len(rewritten) > MAX_GROWTH * max(1, len(original)):
        return (
            f"rewrite too long: {len(rewritten)} chars for an original of {len(original)} (max {MAX_GROWTH}x)"
        )
    for span in dict.fromkeys(protected):
        if not span:
            continue
        expected, found = original.count(span), rewritten.count(span)
        if found != expected:
            return f"protected span {span!r} occurs {found} times in the rewrite, {expected} in the original"
    return None


class Rewriter:
    """Rewrites dataset turns through an OpenAI-compatible chat endpoint, with a disk cache and a verifier.

    url: the API base, e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is appended). model: the
    model name the server expects. cache_dir: answers cached as JSON files (created when missing).
    timeout: seconds per request. api_key: sent as ``Authorization: Bearer`` when given. seed: sent
    with temperature 0 so servers that honour it answer reproducibly. Counters: ``requests``,
    ``cache_hits``, ``rejections`` (rewrites refused by the verifier), ``errors`` (failed requests).
    """

    def __init__(
        self,
        url: str,
        model: str,
        cache_dir: Path,
        timeout: float = 30,
        api_key: str | None = None,
        seed: int = 0,
        instructions: str = DEFAULT_INSTRUCTIONS,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(
                f"LLM url must start with http:// or https://, got {url!r} (e.g. http://127.0.0.1:8000/v1)"
            )
        self.url = url.rstrip("/") + "/chat/completions"
        self.model = model
        self.cache_dir = Path(cache_dir)
        self.timeout = timeout
        self.api_key = api_key
        self.seed = seed
        self.instructions = instructions
        self.requests = 0
        self.cache_hits = 0
        self.rejections = 0
        self.errors = 0

    def stats(self) -> dict[str, int]:
        """Counters so far: requests, cache_hits, rejections, errors."""
        return {
            "requests": self.requests,
            "cache_hits": self.cache_hits,
            "rejections": self.rejections,
            "errors": self.errors,
        }

    def messages(self, text: str, protected: list[str]) -> list[dict[str, str]]:
        """The chat messages sent for ``text``; ``protected`` strings are listed for the model to copy."""
        spans = "\n".join(f"- {s}" for s in dict.fromkeys(protected) if s and s in text) or "- (none)"
        return [
            {"role": "system", "content": self.instructions},
            {"role": "user", "content": f"Protected spans:\n{spans}\n\nText:\n{text}"},
        ]

    def _cache_path(self, messages: list[dict[str, str]]) -> Path:
        key = json.dumps([self.model, messages], ensure_ascii=False, sort_keys=True)
        return self.cache_dir / f"{hashlib.sha256(key.encode('utf-8')).hexdigest()}.json"

    def _post(self, messages: list[dict[str, str]]) -> str:
        body = {"model": self.model, "messages": messages, "temperature": 0, "seed": self.seed}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode("utf-8"), headers, method="POST")
        self.requests += 1
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            answer = json.loads(response.read().decode("utf-8"))
        return str(answer["choices"][0]["message"]["content"])

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The model's reply to ``messages``, from the cache when present; raises OSError/ValueError/KeyError."""
        path = self._cache_path(messages)
        if path.exists():
            try:
                reply = str(json.loads(path.read_text(encoding="utf-8"))["response"])
                self.cache_hits += 1
                return reply
            except (ValueError, KeyError, TypeError):
                pass  # a damaged cache entry is asked again and overwritten
        reply = self._post(messages)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=self.cache_dir)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"model": self.model, "messages": messages, "response": reply}, f, ensure_ascii=False)
        os.replace(tmp, path)
        return reply

    def rewrite_turn(self, text: str, protected: list[str], dialect: Dialect) -> tuple[str, str | None]:
        """(text to use, rejection reason or None). A leading ``<image>`` placeholder is kept in place.

        protected: strings that must survive unchanged (e.g. structure names); the box strings of
        ``dialect`` (the text's) and placeholders found by ``protected_spans`` are added. On rejection or
        error the original is returned.
        """
        match = re.match(rf"\s*{re.escape(IMAGE_TOKEN)}\s*", text)
        prefix, body = (match.group(0), text[match.end() :]) if match else ("", text)
        if not body.strip():
            return text, None
        spans = list(protected) + protected_spans(body, dialect)
        try:
            reply = self.complete(self.messages(body, spans)).strip()
        except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
            self.errors += 1
            return text, f"LLM request to {self.url} failed: {type(err).__name__}: {err}"
        reason = verify_rewrite(body, reply, spans)
        if reason is not None:
            self.rejections += 1
            return text, reason
        return prefix + reply, None


def rewrite_record(
    record: dict, rewriter: Rewriter, roles: tuple[str, ...] = ("human", "gpt")
) -> tuple[dict, list[str]]:
    """A copy of ``record`` with the turns of ``roles`` rewritten, and the reasons for turns kept as they were.

    Protected in every turn: each region name and each turn's structure (so names are neither dropped nor
    invented) plus the box strings of the turn, in the record's ``dialect``. Reasons read
    ``"<record id> turn <i>: <reason>"``. A record without ``dialect`` raises ValueError.
    """
    if not record.get("dialect"):
        raise ValueError(
            f"record {record.get('id')!r} has no 'dialect'; records written by medground build carry one "
            "(rebuild, or add the dialect its boxes are written in)"
        )
    dialect = get_dialect(record["dialect"])
    out = copy.deepcopy(record)
    names = {r.get("name", "") for r in record.get("regions") or []}
    names |= {t.get("structure", "") for t in record.get("turns") or []}
    protected = sorted(n for n in names if n)
    reasons: list[str] = []
    for i, turn in enumerate(out["conversations"]):
        if turn["from"] not in roles:
            continue
        turn["value"], reason = rewriter.rewrite_turn(turn["value"], protected, dialect)
        if reason is not None:
            reasons.append(f"{record.get('id')} turn {i}: {reason}")
    return out, reasons
