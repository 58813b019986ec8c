"""Benchmark: RidgeSeg and PoolSeg (encode support once) vs UniverSeg (CrossConv per query) on CPU.

Measures, at 128 x 128 with k = 8 support examples and 2 CPU threads (configurable):
- latency of one query (ours: support encoding + one query; also the per-query cost once encoded),
- time to segment 64 queries with the same 8 examples (ours encode the support once; UniverSeg
  runs every query against the 8 examples, as its design requires), with query batches of 1 and 8,
  the faster of the two counting for each model,
- peak resident memory of each model's worker process (each runs in its own subprocess).
Weights are random: the speed of an architecture does not depend on its weights.

    .venv/bin/python bench/bench_icl.py --threads 2 --out runs/icl/bench.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

OURS = ("ridgeseg", "poolseg")
ARCHITECTURES = (*OURS, "universeg")


def _timeit(fn, repeats: int) -> float:
    """Median wall time of fn() in seconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def worker(arch: str, size: int, k: int, n_queries: int, threads: int, repeats: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    images, masks = torch.rand(1, k, 3, size, size), (torch.rand(1, k, 1, size, size) > 0.5).float()
    queries = torch.rand(n_queries, 3, size, size)
    result: dict = {"arch": arch, "size": size, "k": k, "threads": threads}
    with torch.no_grad():
        if arch in OURS:
            from medground.icl.model import PoolSeg, PoolSegConfig
            from medground.icl.solver import RidgeSeg, RidgeSegConfig

            net = (
                RidgeSeg(RidgeSegConfig(size=size))
                if arch == "ridgeseg"
                else PoolSeg(PoolSegConfig(size=size))
            ).eval()
            ctx = net.encode_support(images, masks)
            result["encode_support_s"] = _timeit(lambda: net.encode_support(images, masks), repeats)
            result["per_query_encoded_s"] = _timeit(lambda: net.segment(queries[None, :1], ctx), repeats)
            result["one_query_s"] = _timeit(
                lambda: net.segment(queries[None, :1], net.encode_support(images, masks)), repeats
            )

            def run_all(batch: int) -> None:
                c = net.encode_support(images, masks)
                for s in range(0, n_queries, batch):
                    net.segment(queries[None, s : s + batch], c)
        else:
            from medground.icl.universeg import UniverSeg, UniverSegConfig

            net = UniverSeg(UniverSegConfig(size=size)).eval()
            gray, sup = queries.mean(1, keepdim=True)[:, None], images.mean(2, keepdim=True)
            result["one_query_s"] = _timeit(lambda: net(gray[:1], sup, masks), repeats)
            result["per_query_encoded_s"] = result["one_query_s"]

            def run_all(batch: int) -> None:
                for s in range(0, n_queries, batch):
                    b = gray[s : s + batch]
                    net(b, sup.expand(len(b), -1, -1, -1, -1), masks.expand(len(b), -1, -1, -1, -1))

        for batch in (1, 8):
            result[f"all_{n_queries}_queries_batch{batch}_s"] = _timeit(
                lambda b=batch: run_all(b), max(1, repeats // 3)
            )
        result[f"all_{n_queries}_queries_s"] = min(
            result[f"all_{n_queries}_queries_batch{b}_s"] for b in (1, 8)
        )
        result["params"] = sum(p.numel() for p in net.parameters())
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=128, help="working resolution")
    parser.add_argument("--k", type=int, default=8, help="support examples")
    parser.add_argument("--queries", type=int, default=64, help="queries segmented with the same support")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    parser.add_argument("--out", type=Path, default=Path("runs/icl/bench.json"), help="JSON results file")
    parser.add_argument("--worker", choices=ARCHITECTURES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.size, args.k, args.queries, args.threads, args.repeats)))
        return
    results = {}
    for arch in ARCHITECTURES:
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            arch,
            "--size",
            str(args.size),
            "--k",
            str(args.k),
            "--queries",
            str(args.queries),
            "--threads",
            str(args.threads),
            "--repeats",
            str(args.repeats),
        ]
        results[arch] = json.loads(
            subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
        )
    key = f"all_{args.queries}_queries_s"
    for arch in OURS:
        results[f"{arch}_speedup_all_queries"] = results["universeg"][key] / results[arch][key]
        results[f"{arch}_speedup_one_query"] = (
            results["universeg"]["one_query_s"] / results[arch]["one_query_s"]
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"| model | params | 1 query (s) | per query, support encoded (s) | {args.queries} queries (s) | peak RSS (MB) |"
    )
    print("|---|---|---|---|---|---|")
    for arch in ARCHITECTURES:
        r = results[arch]
        print(
            f"| {arch} | {r['params']:,} | {r['one_query_s']:.4f} | {r['per_query_encoded_s']:.4f} | {r[key]:.3f} | {r['peak_rss_mb']:.0f} |"
        )
    for arch in OURS:
        print(
            f"{arch} vs universeg: {args.queries} queries {results[f'{arch}_speedup_all_queries']:.1f}x faster; "
            f"one query {results[f'{arch}_speedup_one_query']:.1f}x"
        )


if __name__ == "__main__":
    main()
