"""Benchmark: LiteMedSAM image encoder CPU time per image (1 thread), box decode time, peak memory of segment --box.

Encoders, interleaved on the same distinct random images (no cache hits), one torch thread, CPU seconds
by ``time.process_time``: the wheel's own eager modules (the reference; built as in
bench/make_litemedsam_fixture.py), ours eager (:class:`medground.vision.tinyvit.TinyViT`), ours folded channels-last torch
(:func:`medground.vision.fast.inference_encoder`) and ours under ONNX Runtime (:mod:`medground.vision.onnx`,
served when onnxruntime is installed). Then the box decode on an encoded image (prompt encoder +
mask decoder + resize to 512 x 512) and the peak RSS of ``medground segment --box`` on a bundled image,
LiteMedSAM (default) against ``--box-model boxseg``, each in a fresh process.

    nice .venv/bin/python bench/bench_encoder.py --images 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from make_litemedsam_fixture import wheel_model

from medground.vision.fast import inference_encoder
from medground.vision.onnx import onnx_encoder, onnxruntime_available
from medground.vision.predictor import ImageEncoder

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src/medground/sample/medseg/shenzhen_cxr_lung_xray/images/CHNCXR_0001_0.png"


def cpu_seconds(fn, x: torch.Tensor) -> float:
    start = time.process_time()
    with torch.inference_mode():
        fn(x)
    return time.process_time() - start


def peak_rss_mib(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one fresh ``medground`` process: its VmHWM after the command
    (read from /proc in the new process; ru_maxrss would carry the forking parent's peak across exec)."""
    code = (
        "import sys; from medground.cli import app; sys.argv[0] = 'medground'; app(standalone_mode=False); "
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    )
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("VmHWM"))
    return int(line.split()[1]) / 1024, time.perf_counter() - start


SERVE_CODE = """
import base64, io, json, statistics, sys, time
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from PIL import Image
from fastapi.testclient import TestClient
from medground.serve.app import build_app

def hwm():
    return int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) / 1024

def body(seed):
    rng = np.random.default_rng(seed)
    img = (rng.random((384, 512)) * 60 + 40).astype(np.uint8)
    img[120:260, 150:330] += 100  # a bright block to segment
    buf = io.BytesIO(); Image.fromarray(img).save(buf, format='PNG')
    url = 'data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode()
    return {'query': url, 'box': [140, 110, 340, 270]}

client = TestClient(build_app())
out = {'loaded_mib': hwm()}
def post(seed):
    start = time.perf_counter()
    r = client.post('/v1/segment', json=body(seed))
    return r.status_code, time.perf_counter() - start
single = [t for _, t in (post(i) for i in range(int(sys.argv[1])))]
out['after_box_requests_mib'] = hwm()
with ThreadPoolExecutor(4) as pool:
    answers = list(pool.map(post, range(1000, 1000 + 4 * int(sys.argv[1]))))
many = [t for code, t in answers if code == 200]
out['single_client_median_s'] = statistics.median(single)
out['four_clients_status_counts'] = {str(c): sum(1 for x, _ in answers if x == c) for c in {x for x, _ in answers}}
out['four_clients_p95_s_of_200s'] = float(np.percentile(many, 95)) if many else None
out['four_clients_median_s_of_200s'] = statistics.median(many) if many else None
out['peak_mib'] = hwm()
print('SERVE', json.dumps(out))
"""


def serve(requests: int) -> dict:
    """/v1/segment with a box in a fresh app process: a new image per request; one client, then 4 at once."""
    proc = subprocess.run([sys.executable, "-c", SERVE_CODE, str(requests)], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"the app process failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("SERVE"))
    return json.loads(line.split(" ", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5, help="distinct random images per encoder")
    parser.add_argument("--memory-only", action="store_true", help="only the peak memory of segment --box")
    parser.add_argument(
        "--serve",
        type=int,
        default=0,
        help="only /v1/segment with a box: N single-client requests, then 4N by 4 clients",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.memory_only:
        print(json.dumps(memory(), indent=2))
        return
    if args.serve:
        print(json.dumps(serve(args.serve), indent=2))
        return
    enc = ImageEncoder.from_pretrained()
    with tempfile.TemporaryDirectory() as scratch:
        reference = wheel_model(Path(scratch)).image_encoder
    encoders = {
        "wheel (reference)": reference,
        "ours eager": enc.model.encode,
        "ours folded torch": inference_encoder(enc.model.image_encoder),
    }
    if onnxruntime_available():
        encoders["ours onnxruntime"] = onnx_encoder(enc.model.image_encoder, threads=1)
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(1, 3, 256, 256, generator=gen) for _ in range(args.images + 1)]
    times: dict[str, list[float]] = {k: [] for k in encoders}
    for fn in encoders.values():
        cpu_seconds(fn, images[-1])  # warm-up on an image not timed
    for x in images[:-1]:
        for name, fn in encoders.items():
            times[name].append(cpu_seconds(fn, x))
    image = np.asarray(np.random.default_rng(0).integers(0, 255, (512, 512)), np.uint8)
    emb = enc.embed(image)
    decode = []
    for i in range(20):
        start = time.process_time()
        enc.predict_boxes(emb, [[100 + i, 120, 300, 330 + i]])
        decode.append(time.process_time() - start)
    out = {
        "encoder_cpu_s": {
            k: {"median": float(np.median(v)), "all": [round(t, 3) for t in v]} for k, v in times.items()
        },
        "decode_cpu_s_median": float(np.median(decode)),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    ref = out["encoder_cpu_s"]["wheel (reference)"]["median"]
    out["ratio_to_reference"] = {k: v["median"] / ref for k, v in out["encoder_cpu_s"].items()}
    print(json.dumps(out | memory(), indent=2))


def memory() -> dict:
    """Peak RSS and wall time of ``segment --box`` with LiteMedSAM and with BoxSeg, each in a fresh process."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = ["segment", "--query", str(SAMPLE), "--out", tmp, "--box", "100,100,360,650"]
        for engine in ("litemedsam", "boxseg"):
            rss, wall = peak_rss_mib([*base, "--box-model", engine])
            out[f"segment_box_{engine}"] = {"peak_rss_mib": rss, "wall_s": wall}
    return out


if __name__ == "__main__":
    main()
