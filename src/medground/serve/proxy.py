"""Proxy mode: the serve API in front of an OpenAI-compatible server (vLLM) running a Qwen-VL checkpoint.

:class:`UpstreamGrounder` stands where the local :class:`~medground.mllm.grounder.Grounder` stands in
the app (same ``dialect``, ``prompt`` and ``ask``), so every route works unchanged. The image and the
question go upstream; a box the client refers to is written into the prompt in the family's dialect
*in the upstream model's frame*: for Qwen2.5-VL that is pixels of the ``smart_resize``'d input, computed
with the min/max pixels the upstream processor uses (configured here, as they cannot be asked for).
The answer text comes back and the same dialect maps its boxes to the pixels of the client's image.
vLLM is never imported: it is reached over HTTP (``httpx2``).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx2
import numpy as np
from PIL import Image

from medground.grounding import Dialect
from medground.mllm.families import FAMILIES, get_family
from medground.mllm.grounder import Answer, Grounder, TextDeltas, answer_text
from medground.mllm.processor import SYSTEM_PROMPT
from medground.types import Box

__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MIN_PIXELS", "UpstreamError", "UpstreamGrounder"]

DEFAULT_MIN_PIXELS = 56 * 56
DEFAULT_MAX_PIXELS = 12845056
"""The resize bounds of the released Qwen2-VL / Qwen2.5-VL processors (``preprocessor_config.json``);
give the upstream's own when its checkpoint or ``--mm-processor-kwargs`` sets others."""


class UpstreamError(RuntimeError):
    """The upstream server could not be reached or refused the request (the app answers 502)."""


def _png_url(picture: Image.Image) -> str:
    """A lossless data URL of the picture, so the upstream sees the client's pixels at the client's size."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class UpstreamGrounder:
    """A refer-and-ground model served upstream at ``url`` (``http://HOST:PORT/v1``) as ``model``.

    ``family``: qwen2-vl, qwen2.5-vl or qwen3-vl (the box dialect its fine-tuning used);
    ``min_pixels`` / ``max_pixels``: the upstream processor's resize bounds (the frame of Qwen2.5-VL's
    pixel boxes). ``max_concurrent`` calls are let through at once (the upstream batches them).
    Decoding is greedy, special tokens kept (Qwen2-VL's box tags are special tokens).
    """

    prompt = Grounder.prompt
    """The local grounder's rule: ``question`` with ``box`` written in :attr:`dialect` (needs only it)."""

    def __init__(
        self,
        url: str,
        model: str,
        family: str,
        min_pixels: int = DEFAULT_MIN_PIXELS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_new_tokens: int = 128,
        timeout_s: float = 120.0,
        max_concurrent: int = 8,
    ) -> None:
        if family not in FAMILIES:
            raise ValueError(f"--upstream-family {family!r} is not one of {', '.join(FAMILIES)}")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--upstream {url!r} is not an http(s) URL such as http://127.0.0.1:8001/v1")
        if not 0 < min_pixels <= max_pixels:
            raise ValueError(f"upstream pixels: need 0 < min ({min_pixels}) <= max ({max_pixels})")
        self.url, self.model, self.max_new_tokens = url.rstrip("/"), model, max_new_tokens
        self.dialect: Dialect = get_family(family).dialect(min_pixels, max_pixels)
        self.max_concurrent = max_concurrent
        self.client = httpx2.Client(timeout=timeout_s)

    def _body(
        self, picture: Image.Image, question: str, history: Sequence[tuple[str, str]]
    ) -> dict[str, Any]:
        """The chat request: the image in the first user turn, as in training, greedy decoding."""
        turns = [*history, (question, None)]
        messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM_PROMPT}]
        for i, (asked, answered) in enumerate(turns):
            content: list[dict[str, Any]] = [{"type": "text", "text": asked}]
            if i == 0:
                content.insert(0, {"type": "image_url", "image_url": {"url": _png_url(picture)}})
            messages.append({"role": "user", "content": content})
            if answered is not None:
                messages.append({"role": "assistant", "content": answered})
        return {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_new_tokens,
            "temperature": 0.0,
            "skip_special_tokens": False,  # vLLM's extension: keep <|box_start|> and friends
        }

    def _refused(self, status: int, text: str) -> UpstreamError:
        return UpstreamError(f"upstream {self.url} answered {status}: {text[:500]}")

    def _stream(self, body: dict[str, Any]) -> Iterator[str]:
        """The content pieces of a streamed upstream answer (server-sent events in OpenAI's format)."""
        with self.client.stream(
            "POST", f"{self.url}/chat/completions", json={**body, "stream": True}
        ) as reply:
            if reply.status_code != 200:
                raise self._refused(reply.status_code, reply.read().decode("utf-8", "replace"))
            for line in reply.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if "error" in event:
                    raise UpstreamError(f"upstream {self.url}: {event['error']}")
                for choice in event.get("choices", []):
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        yield piece

    def ask(
        self,
        image: Image.Image | np.ndarray,
        question: str,
        box: Box | list[int] | tuple[int, ...] | None = None,
        history: Sequence[tuple[str, str]] = (),
        on_text: Callable[[str], None] | None = None,
    ) -> Answer:
        """Ask upstream about ``image`` (PIL or (H, W[, 3]) uint8); boxes in and out in its pixels.

        ``on_text``: called with each piece of the answer as the upstream streams it (the request is
        then streamed); the pieces join to the returned text. Raises :class:`UpstreamError` when the
        upstream cannot be reached or refuses, ``ValueError`` for a box outside the image.
        """
        picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        width, height = picture.size
        body = self._body(picture, self.prompt(question, box, width, height), history)
        try:
            if on_text is None:
                reply = self.client.post(f"{self.url}/chat/completions", json=body)
                if reply.status_code != 200:
                    raise self._refused(reply.status_code, reply.text)
                raw = reply.json()["choices"][0]["message"]["content"] or ""
            else:
                deltas, raw = TextDeltas(on_text), ""
                for piece in self._stream(body):
                    raw += piece
                    deltas.add(raw)
        except httpx2.HTTPError as error:
            raise UpstreamError(
                f"upstream {self.url} unreachable: {type(error).__name__}: {error}"
            ) from error
        except (KeyError, IndexError, TypeError, json.JSONDecodeError) as error:
            raise UpstreamError(f"upstream {self.url} sent no chat completion ({error!r})") from error
        text = answer_text(raw)
        return Answer(text, self.dialect.parse(text, width, height))
