"""A build with LLM rewriting through a fake OpenAI-compatible server on 127.0.0.1."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from medground.data.api import build_dataset
from medground.data.records import RecordConfig

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "medground" / "sample" / "medseg" / "sa_med2d_demo_ct"


def _serve(rewrite):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            text = body["messages"][-1]["content"].split("Text:\n", 1)[1]
            data = json.dumps(
                {"choices": [{"message": {"role": "assistant", "content": rewrite(text)}}]}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def _records(out: Path) -> list[dict]:
    return [
        json.loads(line)
        for f in sorted((out / "records").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]


@pytest.mark.parametrize(
    ("rewrite", "accepted"), [(lambda t: "Indeed, " + t, True), (lambda t: re.sub(r"\d", "7", t), False)]
)
def test_rewrites_are_kept_only_when_names_and_boxes_survive(tmp_path, rewrite, accepted):
    httpd, url = _serve(rewrite)
    try:
        plain = build_dataset(
            [SAMPLE], tmp_path / "plain", RecordConfig(seed=1), report=False, progress=False
        )
        llm = build_dataset(
            [SAMPLE],
            tmp_path / "llm",
            RecordConfig(seed=1),
            report=False,
            progress=False,
            llm_url=url,
            llm_model="fake",
        )
    finally:
        httpd.shutdown()
    turns = plain["counts"]["turns"]
    originals = _records(tmp_path / "plain")
    rewritten = _records(tmp_path / "llm")
    assert [r["turns"] for r in rewritten] == [r["turns"] for r in originals]
    for before, after in zip(originals, rewritten, strict=True):
        for a, b in zip(before["conversations"], after["conversations"], strict=True):
            if accepted:
                assert b["value"].replace("<image>\n", "") == "Indeed, " + a["value"].replace("<image>\n", "")
            else:
                assert b["value"] == a["value"]
    kept = llm["counts"]["llm_turns_kept_original"]
    assert kept == (
        0
        if accepted
        else sum(1 for r in originals for c in r["conversations"] if re.search(r"\d", c["value"]))
    )
    assert turns > 0
