"""Load test of ``medground serve`` with the shipped models, on the loopback address.

Starts the server in a subprocess (its memory is sampled from /proc), then, in one run:

1. baseline: ``GET /health`` latency (the server's floor), then ``/v1/ground`` and ``/v1/segment`` sent
   serially (one client);
2. load: ``--clients`` concurrent clients for ``--load-s`` seconds on ``/v1/ground``, then on
   ``/v1/segment`` (throughput, p50/p95/p99, status counts, ratio to the serial p50);
3. soak: the same clients, three ground requests (X-rays) to one segment, for ``--soak-s`` seconds;
   server RSS sampled every ``--sample-s``: ``rss_drift`` (the bar's measure: the largest deviation of a
   minute's median from the first minute's), ``rss_growth`` (largest single sample over the first: the
   transient buffers of requests in flight) and ``rss_trend`` (last minute's median over the first's).

Request mix (stated, fixed): ground cycles over 9 bundled sample images, four 750 x 734-ish chest
X-rays ("Where are both lungs?"), two 512 x 512 CT slices and a 258 x 181 one ("Where is the
liver?"), two 160 x 160 brain MR slices ("Where is the tumor?"); segment cycles over 3 fetal
ultrasound queries with k = 3 support image/mask pairs, all resized to 512 x 346 (512 px wide).

    python bench/bench_serve.py [--clients 4] [--load-s 45] [--soak-s 300] [--out runs/bench_serve.json]

Prints one JSON object (and writes it to --out). Numbers depend on the machine and its load (the
load average is reported before and after).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx2
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "medground" / "sample" / "medseg"
GROUND = [
    *[
        ("shenzhen_cxr_lung_xray", f"CHNCXR_{n}_0.png", "Where are both lungs?")
        for n in ("0001", "0002", "0003", "0008")
    ],
    *[
        ("sa_med2d_demo_ct", n, "Where is the liver?")
        for n in ("amos_0004_75.png", "amos_0006_90.png", "s0114_111.png")
    ],
    *[
        ("brats2021_flair_mr", n, "Where is the tumor?")
        for n in ("BraTS2021_01646_z053.png", "BraTS2021_01646_z065.png")
    ],
]
SUPPORT = ("000", "003", "006")
QUERIES = ("009", "012", "015")
WIDTH = 512


def _url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _at_width(path: Path, mask: bool = False) -> Image.Image:
    image = Image.open(path)
    height = round(image.height * WIDTH / image.width)
    return image.resize((WIDTH, height), Image.Resampling.NEAREST if mask else Image.Resampling.BILINEAR)


def requests() -> tuple[list[dict], list[dict]]:
    """(ground bodies, segment bodies) of the stated mix."""
    ground = [
        {"image": _url(Image.open(SAMPLE / folder / "images" / name)), "question": question}
        for folder, name, question in GROUND
    ]
    hc = SAMPLE / "hc18_fetal_ultrasound"
    support = [
        {
            "image": _url(_at_width(hc / "images" / f"{i}_HC.png")),
            "mask": _url(_at_width(hc / "masks" / f"{i}_HC_mask.png", True)),
        }
        for i in SUPPORT
    ]
    segment = [{"query": _url(_at_width(hc / "images" / f"{q}_HC.png")), "support": support} for q in QUERIES]
    return ground, segment


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def quantiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99 and mean in seconds (nearest-rank on the sorted values)."""
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]

    return {
        "n": len(ordered),
        "p50_s": round(rank(0.50), 4),
        "p95_s": round(rank(0.95), 4),
        "p99_s": round(rank(0.99), 4),
        "mean_s": round(statistics.fmean(ordered), 4),
    }


def serial(client: httpx2.Client, path: str, bodies: list[dict], n: int) -> dict:
    times, statuses = [], Counter()
    for i in range(n):
        start = time.perf_counter()
        reply = client.post(path, json=bodies[i % len(bodies)]) if bodies else client.get(path)
        times.append(time.perf_counter() - start)
        statuses[reply.status_code] += 1
    return {**quantiles(times), "status": dict(statuses)}


def load(
    base: str,
    jobs: list[tuple[str, dict]],
    clients: int,
    seconds: float,
    sampler: Callable[[], float] | None = None,
    sample_s: float = 5.0,
) -> dict:
    """``clients`` threads, each cycling through ``jobs`` from its own offset until ``seconds`` pass;
    ``sampler`` (server RSS) is read every ``sample_s`` meanwhile."""
    times: dict[str, list[float]] = {path: [] for path, _ in jobs}
    statuses: Counter = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run(offset: int) -> None:
        with httpx2.Client(base_url=base, timeout=120) as client:
            i = offset
            while time.monotonic() < stop:
                path, body = jobs[i % len(jobs)]
                start = time.perf_counter()
                try:
                    status = client.post(path, json=body).status_code
                except httpx2.HTTPError as error:
                    status = type(error).__name__
                elapsed = time.perf_counter() - start
                with lock:
                    times[path].append(elapsed)
                    statuses[f"{path} {status}"] += 1
                i += 1

    threads = [threading.Thread(target=run, args=(k * 3,)) for k in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    samples = []
    while any(t.is_alive() for t in threads):
        if sampler is not None:
            samples.append(sampler())
        deadline = time.monotonic() + sample_s
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
    wall = time.perf_counter() - began
    out = {
        "wall_s": round(wall, 1),
        "status": dict(statuses),
        "server_errors_5xx": sum(n for k, n in statuses.items() if k.split()[-1].startswith("5")),
        "client_errors": sum(n for k, n in statuses.items() if not k.split()[-1].isdigit()),
    }
    for path, values in times.items():
        if values:
            out[path] = {**quantiles(values), "per_s": round(len(values) / wall, 3)}
    if sampler is not None:
        out["rss_mib"] = samples
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--load-s", type=float, default=45.0)
    parser.add_argument("--soak-s", type=float, default=300.0)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--serial", type=int, default=12, help="requests per route sent one at a time")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.soak_s < 60 + args.sample_s:
        parser.error("--soak-s must cover a minute of samples (the memory bar compares each minute's median)")
    ground, segment = requests()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    base = f"http://127.0.0.1:{port}"
    load_before = os.getloadavg()
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "medground.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with httpx2.Client(base_url=base, timeout=120) as client:
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"the server exited: {server.stderr.read().decode()[-2000:]}")
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx2.HTTPError:
                    pass
                time.sleep(0.2)
            startup = time.perf_counter() - started
            client.post("/v1/ground", json=ground[0])  # first-call warm-up, not counted
            client.post("/v1/segment", json=segment[0])
            result: dict = {
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
                "when_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                "load_average_before": [round(v, 2) for v in load_before],
                "server_start_s": round(startup, 1),
                "clients": args.clients,
                "health_serial": serial(client, "/health", [], 50),
                "ground_serial": serial(client, "/v1/ground", ground, args.serial),
                "segment_serial": serial(client, "/v1/segment", segment, max(3, args.serial // 2)),
            }
        result["rss_after_serial_mib"] = round(rss_mib(server.pid), 1)
        result["ground_load"] = load(base, [("/v1/ground", b) for b in ground], args.clients, args.load_s)
        result["segment_load"] = load(base, [("/v1/segment", b) for b in segment], args.clients, args.load_s)
        mixed = [("/v1/ground", b) for b in ground[:3]] + [("/v1/segment", segment[0])]
        soak = load(
            base, mixed, args.clients, args.soak_s, lambda: round(rss_mib(server.pid), 1), args.sample_s
        )
        rss = soak.pop("rss_mib")
        soak["rss_mib"] = {
            "first": rss[0],
            "last": rss[-1],
            "min": min(rss),
            "max": max(rss),
            "samples": rss,
        }
        soak["rss_growth"] = round(max(rss) / rss[0] - 1, 4)
        # Memory that stays is what grows: each minute's median against the first minute's (single
        # samples also swing with the buffers of the requests in flight, which the peak reports).
        minute = max(1, round(60 / args.sample_s))
        medians = [statistics.median(rss[i : i + minute]) for i in range(0, len(rss) - minute + 1, minute)]
        soak["rss_minute_medians"] = [round(m, 1) for m in medians]
        soak["rss_drift"] = round(max(abs(m / medians[0] - 1) for m in medians), 4)
        soak["rss_trend"] = round(statistics.median(rss[-minute:]) / statistics.median(rss[:minute]) - 1, 4)
        result["soak"] = soak
        result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
        floor = result["health_serial"]["p50_s"]
        result["ratios"] = {
            "ground_p95_load_over_serial_p50": round(
                result["ground_load"]["/v1/ground"]["p95_s"] / result["ground_serial"]["p50_s"], 2
            ),
            "segment_p95_load_over_serial_p50": round(
                result["segment_load"]["/v1/segment"]["p95_s"] / result["segment_serial"]["p50_s"], 2
            ),
            "ground_serial_p50_over_health_p50": round(result["ground_serial"]["p50_s"] / floor, 1),
        }
        result["bars"] = {
            "ground_p95_under_1s": result["ground_load"]["/v1/ground"]["p95_s"] < 1.0,
            "segment_p95_under_2s": result["segment_load"]["/v1/segment"]["p95_s"] < 2.0,
            "zero_5xx": all(
                result[k]["server_errors_5xx"] == 0 for k in ("ground_load", "segment_load", "soak")
            ),
            "rss_flat_within_10pct": soak["rss_drift"] <= 0.10,
        }
    finally:
        server.terminate()
        server.wait(30)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
