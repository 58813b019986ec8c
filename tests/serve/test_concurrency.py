"""Concurrent clients and token streaming over a real uvicorn server: answers under load equal answers
given alone, and a streamed answer arrives piece by piece while the model is still decoding."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest

from medground.serve.app import create_app

from .conftest import CXR, HC18, data_url, running

QUESTION = "Where are both lungs?"
# three X-rays that the shipped bird-nano answers differently (it gives 0001 and 0008 the same boxes)
XRAYS = [CXR.with_name(n) for n in ("CHNCXR_0008_0.png", "CHNCXR_0003_0.png", "CHNCXR_0002_0.png")]
SUPPORT = [
    (HC18 / "images" / f"{i}_HC.png", HC18 / "masks" / f"{i}_HC_mask.png") for i in ("000", "003", "006")
]


def _ground(path: Path) -> tuple[str, dict]:
    return "/v1/ground", {"image": data_url(path), "question": QUESTION}


def _segment(query: Path) -> tuple[str, dict]:
    pairs = [{"image": data_url(i), "mask": data_url(m)} for i, m in SUPPORT]
    return "/v1/segment", {"query": data_url(query), "support": pairs}


def test_concurrent_ground_and_segment_answers_equal_the_answers_given_alone(server: str) -> None:
    """Three X-rays grounded and two ultrasounds segmented, each twice, eight clients at once; both
    models run at the same time (one gate each) and every answer is the one the request gets alone."""
    queries = [HC18 / "images" / "009_HC.png", HC18 / "images" / "012_HC.png"]
    requests = [_ground(p) for p in XRAYS] + [_segment(q) for q in queries]
    assert all(p.is_file() for p in [*XRAYS, *queries])
    with httpx2.Client(base_url=server, timeout=120) as client:

        def send(job: tuple[str, dict]) -> dict:
            reply = client.post(job[0], json=job[1])
            assert reply.status_code == 200, reply.text
            return reply.json()

        alone = [send(job) for job in requests]
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(send, requests * 2))
    assert together == alone * 2
    # the requests differ, so equal answers are not one answer repeated
    assert len({a["answer"] for a in alone[:3]}) == 3
    assert alone[3]["rle"] != alone[4]["rle"]


class _Paused:
    """The shipped grounder, paused after its first decoded piece until the test has received it."""

    def __init__(self, grounder) -> None:
        self.grounder, self.seen, self.finished = grounder, threading.Event(), threading.Event()
        self.dialect = grounder.dialect

    def prompt(self, *args):
        return self.grounder.prompt(*args)

    def ask(self, image, question, box=None, history=(), on_text=None):
        first = [True]

        def hand_on(piece: str) -> None:
            on_text(piece)
            if first[0]:
                first[0] = False
                assert self.seen.wait(30), "the first piece did not reach the client while decoding"

        try:
            return self.grounder.ask(image, question, box, history, on_text=hand_on if on_text else None)
        finally:
            self.finished.set()


def _chunks(lines) -> list[dict]:
    """The JSON events of an SSE stream up to ``data: [DONE]``."""
    events = []
    for line in lines:
        if line.startswith("data: "):
            if line == "data: [DONE]":
                break
            events.append(json.loads(line[len("data: ") :]))
    return events


@pytest.mark.parametrize("image", XRAYS[:2], ids=["xray-8", "xray-1"])
def test_streamed_answer_arrives_token_by_token_and_joins_to_the_full_answer(models, image: Path) -> None:
    grounder, segmenter = models
    paused = _Paused(grounder)
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(image)}},
                {"type": "text", "text": QUESTION},
            ],
        }
    ]
    with running(create_app(paused, segmenter)) as url, httpx2.Client(base_url=url, timeout=120) as client:
        whole = client.post("/v1/chat/completions", json={"messages": messages}).json()
        paused.seen.clear()
        paused.finished.clear()
        events = []
        with client.stream(
            "POST", "/v1/chat/completions", json={"messages": messages, "stream": True}
        ) as reply:
            assert reply.status_code == 200
            assert reply.headers["content-type"].startswith("text/event-stream")
            lines = reply.iter_lines()
            for line in lines:
                events += _chunks([line])
                if any(e["choices"][0]["delta"].get("content") for e in events):
                    break
            # one piece is here and the model is held right after decoding it: nothing was decoded in full
            assert not paused.finished.is_set()
            paused.seen.set()
            events += _chunks(lines)
    message = whole["choices"][0]["message"]
    pieces = [e["choices"][0]["delta"].get("content") for e in events]
    content = [p for p in pieces if p]
    assert len(content) > 5, content
    assert "".join(content) == message["content"]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    last = events[-1]["choices"][0]
    assert last["finish_reason"] == "stop"
    assert last["delta"]["medground"] == message["medground"]
    assert message["medground"]["boxes"], "the shipped model boxes the lungs of these X-rays"
    assert all(e["id"] == events[0]["id"] for e in events)
