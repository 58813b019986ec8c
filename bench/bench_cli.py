"""Benchmark: CPU time of `medground --help` (start-up cost of the CLI) against a bare `python -c pass`.

Each command runs ``--runs`` times as a subprocess; its CPU time (user + system) is the growth of
``resource.getrusage(RUSAGE_CHILDREN)`` across the run, its wall time from ``time.perf_counter``. Prints
the median and range of both per command, and the CLI's CPU time net of the interpreter's own start.
The target of issue 12 is under 0.5 s CPU for `medground --help`.

    python bench/bench_cli.py [--runs 5] [--src OTHER_CHECKOUT/src]

``--src`` puts another source tree first on PYTHONPATH (e.g. an older commit unpacked with
``git archive COMMIT src | tar -x -C /tmp/old``) to measure before and after in one run.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_CPU_S = 0.5


def cli() -> list[str]:
    """The ``medground`` console script beside this interpreter, else ``python -m medground.cli``."""
    script = Path(sys.executable).with_name("medground")
    if script.is_file():
        return [str(script)]
    found = shutil.which("medground")
    return [found] if found else [sys.executable, "-m", "medground.cli"]


def measure(command: list[str], runs: int, env: dict[str, str]) -> tuple[list[float], list[float]]:
    """CPU seconds (user + sys) and wall seconds of each of ``runs`` runs of ``command``."""
    cpu, wall = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
        wall.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="Runs per command (the median is reported).")
    parser.add_argument("--src", type=Path, default=None, help="Source tree to put first on PYTHONPATH.")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.src is not None:
        if not (args.src / "medground" / "cli.py").is_file():
            sys.exit(f"--src {args.src}: no medground/cli.py there; give the folder that holds medground/")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.src.resolve()), env.get("PYTHONPATH")]))
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "medground --help": [*cli(), "--help"],
        "medground build --help": [*cli(), "build", "--help"],
    }
    print(f"{args.runs} runs each; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    if args.src is not None:
        print(f"medground from {args.src.resolve()}")
    print(f"{'command':<26} {'CPU s median':>12} {'(min-max)':>14} {'wall s median':>14}")
    medians = {}
    for name, command in commands.items():
        cpu, wall = measure(command, args.runs, env)
        medians[name] = statistics.median(cpu)
        span = f"({min(cpu):.3f}-{max(cpu):.3f})"
        print(f"{name:<26} {medians[name]:>12.3f} {span:>14} {statistics.median(wall):>14.3f}")
    help_cpu = medians["medground --help"]
    verdict = "meets" if help_cpu < TARGET_CPU_S else "misses"
    print(
        f"medground --help: {help_cpu:.3f} s CPU, {help_cpu - medians['python -c pass']:.3f} s above a bare "
        f"interpreter; {verdict} the {TARGET_CPU_S} s target"
    )


if __name__ == "__main__":
    main()
