"""A server in a process of its own, for the abuse tests and ``bench/bench_abuse.py``: its peak memory is
read from ``/proc/<pid>/status`` (VmHWM), which an in-process server cannot give (the test's own peak
only grows). The child runs ``python -m medground.serve.process SETTINGS_JSON PORT HEADER_TIMEOUT_S``:
the shipped models (the in-context one at :data:`~medground.serve.app.SERVED_ICL_SIZE`), grounding
batched as ``medground serve`` does, on loopback, with :data:`~medground.serve.limits.UVICORN_OPTIONS`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ServerProcess", "memory_mb", "server_process", "server_processes"]


@dataclass(frozen=True)
class ServerProcess:
    """A running server: its base URL and process id."""

    url: str
    pid: int

    def memory_mb(self) -> dict[str, float]:
        """``{"rss", "peak"}``: its resident memory now and its peak so far (VmRSS, VmHWM), MiB."""
        return memory_mb(self.pid)


def memory_mb(pid: int) -> dict[str, float]:
    """``{"rss", "peak"}`` of process ``pid`` from ``/proc/<pid>/status`` (VmRSS, VmHWM), MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields["rss" if key == "VmRSS" else "peak"] = int(value.split()[0]) / 1024
    return fields


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server_process(settings: dict[str, Any], header_timeout_s: float = 10.0) -> Iterator[ServerProcess]:
    """Start a server over the shipped models with ``ServeSettings(**settings)`` in a child process on a
    free loopback port; yields once ``/health`` answers; stopped (SIGTERM, then SIGKILL) on exit."""
    with server_processes([settings], header_timeout_s) as servers:
        yield servers[0]


@contextmanager
def server_processes(
    settings: list[dict[str, Any]], header_timeout_s: float = 10.0
) -> Iterator[list[ServerProcess]]:
    """:func:`server_process` for several servers, started at once (their start-ups overlap)."""
    children, servers = [], []
    try:
        for values in settings:
            port = _free_port()
            command = [
                *(sys.executable, "-m", "medground.serve.process"),
                *(json.dumps(values), str(port), str(header_timeout_s)),
            ]
            children.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            servers.append(ServerProcess(f"http://127.0.0.1:{port}", children[-1].pid))
        for child, server in zip(children, servers, strict=True):
            _wait_healthy(child, server.url)
        yield servers
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _wait_healthy(child: subprocess.Popen, url: str) -> None:
    import httpx2

    deadline = time.monotonic() + 180
    while True:
        if child.poll() is not None:
            raise RuntimeError(f"the server process exited: {child.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError("the server process did not answer /health within 180 s")
        try:
            if httpx2.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            time.sleep(0.1)


def main(settings_json: str, port: str, header_timeout_s: str) -> None:
    """The child: load the models, serve until terminated."""
    import uvicorn

    from medground.icl.segmenter import InContextSegmenter
    from medground.mllm.grounder import Grounder
    from medground.serve.app import SERVED_ICL_SIZE, ServeSettings, create_app
    from medground.serve.batching import BatchingGrounder
    from medground.serve.limits import UVICORN_OPTIONS, HeaderTimeoutH11

    values = json.loads(settings_json)
    if values.get("allowed_hosts") is not None:
        values["allowed_hosts"] = tuple(values["allowed_hosts"])
    settings = ServeSettings(**values)
    grounder = BatchingGrounder(Grounder.from_pretrained(), settings.max_batch)
    app = create_app(grounder, InContextSegmenter.from_pretrained(size=SERVED_ICL_SIZE), settings)
    protocol = type("TimedH11", (HeaderTimeoutH11,), {"header_timeout_s": float(header_timeout_s)})
    options = {**UVICORN_OPTIONS, "http": protocol}
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", access_log=False, **options)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main(*sys.argv[1:])
