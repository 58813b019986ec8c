"""The attack mix of issue 22 beside one serial normal client, against ``medground serve``'s app in a
process of its own (:mod:`medground.serve.process`; peak memory from its VmHWM), loopback only.

One run, three phases of ``DURATION_S`` each on the same warm server (quiet, attack, quiet again: the
machine's own load drifts, so the quiet latencies are taken on both sides of the attack):

1. quiet: the normal client alone sends ``/v1/ground`` (a 750 x 734 chest X-ray, "Where are both
   lungs?") one request after another: its latencies;
2. attack: the same client while ``CONCURRENCY`` attackers each start one attack every
   ``1 / RATE_PER_WORKER`` s (a fixed schedule; an attack that takes longer delays that worker's next),
   cycling through the attacks of :meth:`Attacks.mix` (``--with-accepted`` adds the largest segment
   request the budgets accept, which is not an attack but real work);
3. quiet again.

Reports the normal client's p50/p95 quiet (both quiet phases together) and under attack, the bar
max(2 s, 1.5 x quiet p95), every attack's status counts (no 5xx allowed), the server's idle peak (after
a warm-up) and its peak at the end (VmHWM), the budgets (:data:`BUDGETS`) and the bound they give
(largest accepted volume + volume store + pixel budget + in-flight bodies + 400 MB over the idle peak),
and the time from the last header byte to the answer for an unauthenticated request announcing 200 MiB
(``ANNOUNCE_TRIES`` tries, quiet server).

    python bench/bench_abuse.py [--with-accepted] [--out runs/bench_abuse.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx2
import numpy as np

from medground.io.atomic import atomic_write_text
from medground.serve.attacks import (
    MiB,
    announce_only,
    connect,
    deflated_dicom,
    head,
    nifti_gz,
    png_url,
    read_answer,
    stream_body,
)
from medground.serve.process import server_process

ROOT = Path(__file__).resolve().parents[1]
CXR = ROOT / "src/medground/sample/medseg/shenzhen_cxr_lung_xray/images/CHNCXR_0008_0.png"
TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DURATION_S = 40.0
CONCURRENCY = 8
RATE_PER_WORKER = 1.0
"""Attacks started per second by each attacker (8 attackers: up to 8 attacks a second in all)."""
ANNOUNCE_TRIES = 50
BUDGETS = {
    "token": TOKEN,
    "max_body_bytes": 32 * MiB,
    "max_volume_bytes": 64 * MiB,
    "max_voxels": 16 * MiB,
    "max_volumes": 4,
    "max_volume_store_bytes": 256 * MiB,
    "max_request_pixels": 32 * MiB,
    "max_inflight_bytes": 128 * MiB,
}
"""ServeSettings of the server under attack (its defaults otherwise: 4096 x 4096 pixels per image,
8 waiting per model, 10 s per body chunk, 120 s per body; uvicorn: 10 s for headers, 64 connections)."""


def _ground_body() -> dict:
    return {
        "image": "data:image/png;base64," + base64.b64encode(CXR.read_bytes()).decode(),
        "question": "Where are both lungs?",
    }


def _segment_body(side: int, k: int) -> dict:
    """A /v1/segment body: a side x side query and k support pairs (a centred square as the mask)."""
    image, square = np.zeros((side, side), np.uint8), np.zeros((side, side), np.uint8)
    square[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = 255
    pair = {"image": png_url(image), "mask": png_url(square)}
    return {"query": png_url(image), "support": [pair] * k}


class Attacks:
    """The payloads, built once, and one method per attack; each returns the status it got (0: none)."""

    def __init__(self, url: str, accepted: bool) -> None:
        self.url, self.accepted = url, accepted
        self.client = httpx2.Client(base_url=url, timeout=120)
        big = png_url(np.zeros((4096, 4096), np.uint8))
        self.pixel_bomb = {"query": big, "support": [{"image": big, "mask": big}] * 16}
        self.heavy_segment = _segment_body(1024, 15)  # 31 x 1024^2 px: just under the 32 Mi budget
        self.forged = nifti_gz(2.0**30)
        self.offset = nifti_gz(8.0 * MiB)
        self.deflated = deflated_dicom(256 * MiB)
        self.long_question = {**_ground_body(), "question": "where? " * 40_000}
        self.many_tokens = {**_ground_body(), "question": "1+2=" * 750}

    def mix(self) -> dict[str, Callable[[], int]]:
        octet = {**AUTH, "Content-Type": "application/octet-stream"}
        attacks = {
            "unauthenticated 200 MiB stream": lambda: stream_body(
                self.url, "/v1/volumes", {"Content-Type": "application/octet-stream"}, 200 * MiB
            )[0],
            "announced 200 MiB, no body": lambda: announce_only(self.url, "/v1/volumes", octet)[0],
            "NIfTI vox_offset 1 GiB": lambda: self._post("/v1/volumes", self.forged, octet),
            "NIfTI vox_offset 8 MiB": lambda: self._post("/v1/volumes", self.offset, octet),
            "Deflated DICOM, 256 MiB inflated": lambda: self._post("/v1/volumes", self.deflated, octet),
            "16 supports of 4096^2": lambda: self._json("/v1/segment", self.pixel_bomb),
            "280k-character question": lambda: self._json("/v1/ground", self.long_question),
            "3000 tokens in 3000 characters": lambda: self._json("/v1/ground", self.many_tokens),
            "headers never finished": self.half_headers,
            "body stalled": self.stalled_body,
            "client leaves mid-answer": self.leave,
        }
        if self.accepted:  # not an attack: the largest request the budgets let through, segmented
            attacks["15 supports of 1024^2 (accepted)"] = lambda: self._json(
                "/v1/segment", self.heavy_segment
            )
        return attacks

    def _post(self, path: str, data: bytes, headers: dict[str, str]) -> int:
        return self.client.post(path, content=data, headers=headers).status_code

    def _json(self, path: str, body: dict) -> int:
        return self.client.post(path, json=body, headers=AUTH).status_code

    def half_headers(self) -> int:
        with connect(self.url, timeout=30) as sock:
            sock.sendall(b"POST /v1/ground HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            return 0 if sock.recv(1) == b"" else -1  # 0: closed by the server, as it should be

    def stalled_body(self) -> int:
        with connect(self.url, timeout=30) as sock:
            headers = {**AUTH, "Content-Type": "application/json", "Content-Length": "1000"}
            sock.sendall(head("POST", "/v1/ground", headers) + b'{"image": "')
            return read_answer(sock)[0]

    def leave(self) -> int:
        data = json.dumps(_ground_body()).encode()
        with connect(self.url) as sock:
            headers = {**AUTH, "Content-Type": "application/json", "Content-Length": str(len(data))}
            sock.sendall(head("POST", "/v1/ground", headers) + data)
            time.sleep(0.05)
        return 0


def _normal_client(url: str, stop: threading.Event) -> list[float]:
    body, seconds = _ground_body(), []
    with httpx2.Client(base_url=url, headers=AUTH, timeout=120) as client:
        while not stop.is_set():
            start = time.perf_counter()
            reply = client.post("/v1/ground", json=body)
            seconds.append(time.perf_counter() - start)
            if reply.status_code != 200:
                raise RuntimeError(f"the normal client got {reply.status_code}: {reply.text[:300]}")
    return seconds


def _attacker(mix: dict[str, Callable[[], int]], offset: int, stop: threading.Event, seen: dict) -> None:
    names, i, next_start = list(mix), offset, time.monotonic()
    while not stop.is_set():
        name = names[i % len(names)]
        try:
            status = mix[name]()
        except OSError as error:  # refused connections etc.: counted, never hidden
            status = type(error).__name__
        seen[name][status] += 1
        i += CONCURRENCY
        next_start += 1 / RATE_PER_WORKER
        time.sleep(max(0.0, next_start - time.monotonic()))


def _phase(url: str, attacks: Attacks | None) -> tuple[list[float], dict]:
    stop, seen = threading.Event(), {}
    threads = []
    if attacks is not None:
        mix = attacks.mix()
        seen = {name: Counter() for name in mix}
        threads = [threading.Thread(target=_attacker, args=(mix, k, stop, seen)) for k in range(CONCURRENCY)]
    result: list[list[float]] = []
    normal = threading.Thread(target=lambda: result.append(_normal_client(url, stop)))
    for thread in [normal, *threads]:
        thread.start()
    time.sleep(DURATION_S)
    stop.set()
    for thread in [normal, *threads]:
        thread.join(180)
    return result[0], {name: dict(counts) for name, counts in seen.items()}


def _quantile(values: list[float], q: float) -> float:
    return float(np.quantile(np.asarray(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--with-accepted",
        action="store_true",
        help="add to the mix the largest /v1/segment the budgets accept (15 supports of 1024 x 1024)",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()
    with server_process(BUDGETS) as server:
        attacks = Attacks(server.url, args.with_accepted)
        for _ in range(3):  # warm-up: first calls of both models
            assert attacks._json("/v1/ground", _ground_body()) == 200
        assert attacks._json("/v1/segment", _segment_body(256, 3)) == 200
        idle = server.memory_mb()["peak"]
        announced = [
            announce_only(server.url, "/v1/ground", {"Content-Type": "application/json"})
            for _ in range(ANNOUNCE_TRIES)
        ]
        before, _ = _phase(server.url, None)
        loud, seen = _phase(server.url, attacks)
        after, _ = _phase(server.url, None)
        quiet = before + after
        peak = server.memory_mb()["peak"]
        metrics = attacks.client.get("/metrics", headers=AUTH).text
    largest = (
        BUDGETS["max_volume_bytes"] + 2 * 4 * BUDGETS["max_voxels"]
    )  # bytes, float32 and its canonical copy
    pixels = 2 * 3 * BUDGETS["max_request_pixels"]  # RGB and one converted copy
    bound = (
        idle
        + (largest + BUDGETS["max_volume_store_bytes"] + BUDGETS["max_inflight_bytes"] + pixels) / MiB
        + 400
    )
    p95_quiet, p95_loud = _quantile(quiet, 0.95), _quantile(loud, 0.95)
    statuses = [s for counts in seen.values() for s in counts]
    result = {
        "machine": "2-core shared VM, CPU only",
        "duration_s": DURATION_S,
        "concurrency": CONCURRENCY,
        "rate_per_worker": RATE_PER_WORKER,
        "with_accepted": args.with_accepted,
        "budgets": {k: v for k, v in BUDGETS.items() if k != "token"},
        "announced_200MiB_unauthenticated": {
            "statuses": dict(Counter(s for s, _ in announced)),
            "median_ms": 1000 * _quantile([t for _, t in announced], 0.5),
            "max_ms": 1000 * max(t for _, t in announced),
        },
        "normal_quiet": {"n": len(quiet), "p50_s": _quantile(quiet, 0.5), "p95_s": p95_quiet},
        "normal_quiet_before_after_p95_s": [_quantile(before, 0.95), _quantile(after, 0.95)],
        "normal_under_attack": {"n": len(loud), "p50_s": _quantile(loud, 0.5), "p95_s": p95_loud},
        "p95_bar_s": max(2.0, 1.5 * p95_quiet),
        "p95_met": p95_loud <= max(2.0, 1.5 * p95_quiet),
        "attacks": seen,
        "any_5xx": any(isinstance(s, int) and s >= 500 for s in statuses),
        "server_peak_mib": {"idle": idle, "end": peak, "bound": bound, "met": peak <= bound},
        "metrics_5xx_lines": [line for line in metrics.splitlines() if 'status="5' in line],
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
