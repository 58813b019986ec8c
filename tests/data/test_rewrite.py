"""Tests of LLM rewriting: span protection, verification, disk cache and failure handling.

A tiny OpenAI-compatible server on 127.0.0.1 (random port) returns canned rewrites.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from medground.data.rewrite import Rewriter, protected_spans, rewrite_record, verify_rewrite
from medground.grounding import DIALECTS, TagDialect, get_dialect

QWEN = get_dialect("qwen-vl-grid")

BOX = "<box>(156,166),(453,395)</box>"
ANSWER = f"The <ref>liver</ref>{BOX} is in the upper left of the image."
# original text (as sent) -> canned reply of the fake server
CANNED = {
    ANSWER: f"You can see the <ref>liver</ref>{BOX} at the top left.",  # good
    "Where is the liver?": "Where is the liver located?",  # good (question)
    "The <ref>spleen</ref><box>(1,2),(3,4)</box> is here.": "The <ref>spleen</ref><box>(1,2),(3,5)</box> is here.",
    "It is the spleen.": "That organ is shown.",  # drops the name
}


class _Handler(BaseHTTPRequestHandler):
    calls: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        text = body["messages"][-1]["content"].split("Text:\n", 1)[1]
        reply = {"choices": [{"message": {"role": "assistant", "content": CANNED.get(text, text)}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[dict]]]:
    _Handler.calls = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", _Handler.calls
    httpd.shutdown()
    httpd.server_close()


def test_protected_spans_are_those_of_the_texts_dialect():
    text = (
        "<image>\nThe <ref>liver</ref><box>(1,2),(3,4)</box><box>(5,6),(7,8)</box> and "
        "<|object_ref_start|>spleen<|object_ref_end|><|box_start|>(10,20),(30,40)<|box_end|> and "
        '{"bbox_2d": [1, 2, 3, 4], "label": "kidney"} then <box>(1,2),(3,4)</box>.'
    )
    assert protected_spans(text, QWEN) == [
        "<image>",
        "<ref>liver</ref>",
        "<box>(1,2),(3,4)</box>",
        "<box>(5,6),(7,8)</box>",
        "<box>(1,2),(3,4)</box>",
    ]
    assert protected_spans(text, get_dialect("qwen2-vl-norm1000")) == [
        "<image>",
        "<|object_ref_start|>spleen<|object_ref_end|>",
        "<|box_start|>(10,20),(30,40)<|box_end|>",
    ]
    assert protected_spans(text, get_dialect("qwen3-vl-norm1000")) == [
        "<image>",
        '{"bbox_2d": [1, 2, 3, 4], "label": "kidney"}',
    ]
    florence = "liver<loc_1><loc_2><loc_3><loc_4> and spleen<loc_5><loc_6><loc_7><loc_8><loc_9><loc_10><loc_11><loc_12>"
    assert protected_spans(florence, get_dialect("florence-2-loc")) == [
        "<loc_1><loc_2><loc_3><loc_4>",
        "<loc_5><loc_6><loc_7><loc_8><loc_9><loc_10><loc_11><loc_12>",
    ]
    assert protected_spans("no boxes here", QWEN) == []


def test_a_loose_pattern_of_another_dialect_does_not_change_protection(monkeypatch):
    class Loose(TagDialect):
        @property
        def protected_pattern(self):  # every word
            return re.compile(r"\w+")

    before = protected_spans(ANSWER, QWEN)
    monkeypatch.setitem(DIALECTS, "zz-loose-test", Loose("zz-loose-test", "<a>", "</a>", "<b>", "</b>"))
    assert protected_spans(ANSWER, QWEN) == before == ["<ref>liver</ref>", BOX]


def test_verify_rewrite_rules():
    spans = ["liver", *protected_spans(ANSWER, QWEN)]
    assert verify_rewrite(ANSWER, f"See the <ref>liver</ref>{BOX} at top left.", spans) is None
    assert "occurs 0 times" in verify_rewrite(ANSWER, "See the <ref>liver</ref> at top left.", spans)
    changed = verify_rewrite(ANSWER, "See the <ref>liver</ref><box>(156,166),(453,396)</box>.", spans)
    assert BOX in changed and "occurs 0 times" in changed
    assert "occurs 2 times" in verify_rewrite(ANSWER, f"The <ref>liver</ref>{BOX}{BOX}.", spans)
    assert verify_rewrite(ANSWER, "  ", spans) == "empty rewrite"
    assert "too long" in verify_rewrite("ab", "abcdefg", [])
    assert verify_rewrite("ab", "abcdef", []) is None  # exactly 3x is allowed
    assert "'kidney' occurs 1 times" in verify_rewrite(
        "The liver.", "The liver and kidney.", ["liver", "kidney"]
    )


def test_rewriter_verifies_and_caches(server, tmp_path):
    url, calls = server
    rw = Rewriter(url, "tiny-model", tmp_path / "cache", timeout=5, api_key="k")
    text, reason = rw.rewrite_turn(ANSWER, ["liver"], QWEN)
    assert (text, reason) == (CANNED[ANSWER], None)
    assert calls[0]["path"] == "/v1/chat/completions" and calls[0]["auth"] == "Bearer k"
    body = calls[0]["body"]
    assert body["model"] == "tiny-model" and body["temperature"] == 0 and body["seed"] == 0
    assert f"- {BOX}" in body["messages"][-1]["content"]
    # image placeholder stays in front and is not sent
    assert rw.rewrite_turn("<image>\nWhere is the liver?", ["liver"], QWEN) == (
        "<image>\nWhere is the liver located?",
        None,
    )
    assert "<image>" not in calls[1]["body"]["messages"][-1]["content"]
    bad_box = "The <ref>spleen</ref><box>(1,2),(3,4)</box> is here."
    text, reason = rw.rewrite_turn(bad_box, ["spleen"], QWEN)
    assert text == bad_box and "<box>(1,2),(3,4)</box>" in reason
    text, reason = rw.rewrite_turn("It is the spleen.", ["spleen"], QWEN)
    assert text == "It is the spleen." and "'spleen' occurs 0 times" in reason
    assert rw.stats() == {"requests": 4, "cache_hits": 0, "rejections": 2, "errors": 0}
    assert len(list((tmp_path / "cache").glob("*.json"))) == 4
    # a fresh rewriter on the same cache makes no request and gives the same answers
    again = Rewriter(url, "tiny-model", tmp_path / "cache", timeout=5)
    assert again.rewrite_turn(ANSWER, ["liver"], QWEN) == (CANNED[ANSWER], None)
    assert again.rewrite_turn("It is the spleen.", ["spleen"], QWEN)[0] == "It is the spleen."
    assert len(calls) == 4 and again.stats() == {"requests": 0, "cache_hits": 2, "rejections": 1, "errors": 0}
    # another model is another cache key
    Rewriter(url, "other-model", tmp_path / "cache").rewrite_turn(ANSWER, ["liver"], QWEN)
    assert len(calls) == 5


def test_rewrite_record(server, tmp_path):
    url, calls = server
    record = {
        "id": "r#0",
        "dialect": "qwen-vl-grid",
        "regions": [{"name": "liver"}],
        "turns": [{"structure": "liver"}, {"structure": "spleen"}],
        "conversations": [
            {"from": "human", "value": "<image>\nWhere is the liver?"},
            {"from": "gpt", "value": ANSWER},
            {"from": "human", "value": "What is this?"},
            {"from": "gpt", "value": "It is the spleen."},
        ],
    }
    out, reasons = rewrite_record(record, Rewriter(url, "m", tmp_path / "c"))
    assert [t["value"] for t in out["conversations"]] == [
        "<image>\nWhere is the liver located?",
        CANNED[ANSWER],
        "What is this?",
        "It is the spleen.",
    ]
    assert len(reasons) == 1 and reasons[0].startswith("r#0 turn 3: ")
    assert record["conversations"][1]["value"] == ANSWER  # input not changed
    assert "- liver" in calls[0]["body"]["messages"][-1]["content"]
    with pytest.raises(ValueError, match="no 'dialect'"):
        rewrite_record(
            {k: v for k, v in record.items() if k != "dialect"}, Rewriter(url, "m", tmp_path / "c")
        )


def test_network_failure_keeps_original(tmp_path):
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rw = Rewriter(f"http://127.0.0.1:{port}/v1", "m", tmp_path / "cache", timeout=2)
    text, reason = rw.rewrite_turn(ANSWER, ["liver"], QWEN)
    assert text == ANSWER and reason.startswith(
        f"LLM request to http://127.0.0.1:{port}/v1/chat/completions failed"
    )
    assert rw.stats() == {"requests": 1, "cache_hits": 0, "rejections": 0, "errors": 1}
    assert not list(tmp_path.glob("cache/*.json"))  # failures are not cached
    with pytest.raises(ValueError, match="http://"):
        Rewriter("127.0.0.1:8000", "m", tmp_path)


def test_damaged_cache_entry_is_asked_again(server, tmp_path):
    url, calls = server
    rw = Rewriter(url, "m", tmp_path / "cache")
    rw.rewrite_turn("Where is the liver?", ["liver"], QWEN)
    (entry,) = (tmp_path / "cache").glob("*.json")
    entry.write_text("{not json")
    assert rw.rewrite_turn("Where is the liver?", ["liver"], QWEN) == ("Where is the liver located?", None)
    assert len(calls) == 2 and json.loads(entry.read_text())["response"] == "Where is the liver located?"
