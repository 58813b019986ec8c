"""The shipped models loaded once, and a real uvicorn server on a free loopback port for client tests."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from medground.icl.segmenter import InContextSegmenter
from medground.mllm.grounder import Grounder
from medground.serve.app import create_app

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "medground" / "sample" / "medseg"
CXR = SAMPLE / "shenzhen_cxr_lung_xray" / "images" / "CHNCXR_0008_0.png"  # 750 x 734 RGB PNG
HC18 = SAMPLE / "hc18_fetal_ultrasound"


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


@pytest.fixture(scope="session")
def models() -> tuple[Grounder, InContextSegmenter]:
    return Grounder.from_pretrained(), InContextSegmenter.from_pretrained()


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Base URL of a uvicorn server (in a thread) over ``app`` on a free loopback port; stopped on exit."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="session")
def server(models: tuple[Grounder, InContextSegmenter]) -> Iterator[str]:
    """Base URL of a uvicorn server over the shipped models; stopped after the session."""
    with running(create_app(*models)) as url:
        yield url
