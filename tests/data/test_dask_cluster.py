"""A Dask cluster by hand, as on SLURM or Kubernetes: ``dask scheduler`` and two ``dask worker`` processes
(each its own OS process group, like a node), and ``medground build --scheduler ADDRESS`` run as users run
it. The sample collection is built in shards of one item (25 tasks); every file of the output, the manifest
included (it holds no time stamps), must be byte-identical to a local one-process build, also when a
worker is SIGKILLed in the middle of the build."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from distributed import Client

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "medground" / "sample" / "medseg"
BIN = Path(sys.executable).parent  # the venv's console scripts: medground, and dask from distributed
SHARDS = 25  # items in the sample collection (one per bundled image) = shards at --shard-size 1


def _tree(root: Path) -> dict[str, str]:
    """sha256 of every file under root (hidden ones too), by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _build_command(out: Path, scheduler: str | None = None) -> list[str]:
    command = [str(BIN / "medground"), "build", *map(str, sorted(SAMPLE.iterdir())), "--out", str(out)]
    command += ["--shard-size", "1", "--no-report", "--no-progress"]
    return command + (["--scheduler", scheduler] if scheduler else [])


@pytest.fixture(scope="module")
def local_tree(tmp_path_factory) -> dict[str, str]:
    """The reference: the same build in one local process."""
    out = tmp_path_factory.mktemp("local") / "out"
    subprocess.run(_build_command(out), check=True, capture_output=True, timeout=120)
    return _tree(out)


@dataclass
class Cluster:
    address: str
    scheduler_file: Path
    client: Client  # the test's own client, to ask the scheduler who holds what
    workers: dict[str, subprocess.Popen]  # by worker name
    root: Path

    def add_worker(self, name: str) -> None:
        """A ``dask worker`` (a nanny and its worker process): one process, one thread, as on a node."""
        command = [str(BIN / "dask"), "worker", "--scheduler-file", str(self.scheduler_file), "--name", name]
        command += ["--nworkers", "1", "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"]
        command += ["--local-directory", str(self.root / name)]
        self.workers[name] = _start(command, self.root / f"worker-{name}.log", self.root)

    def worker_address(self, name: str) -> str:
        found = [a for a, w in self.client.scheduler_info()["workers"].items() if w["name"] == name]
        assert len(found) == 1, f"worker {name!r} not registered: {found}"
        return found[0]

    def tasks_in_flight(self) -> int:
        """Tasks the scheduler holds that are not finished yet (waiting, queued or running)."""
        return self.client.run_on_scheduler(
            lambda dask_scheduler: sum(t.state != "memory" for t in dask_scheduler.tasks.values())
        )

    def log_tails(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.root.glob("*.log")))


def _start(command: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A process in its own session, so killing its group takes the nanny, the worker and their helpers."""
    with open(log, "wb") as handle:
        return subprocess.Popen(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )


def _stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):  # whatever of the group outlived its leader
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@contextlib.contextmanager
def _cluster(root: Path, allowed_failures: int | None = None) -> Iterator[Cluster]:
    """A scheduler on a free port of 127.0.0.1 (port 0: the OS picks) and no workers yet; the scheduler and
    every worker added are stopped on the way out, also when the test fails. ``allowed_failures``: how many
    workers may die running one task before the scheduler gives up on it (Dask's default when None)."""
    root.mkdir()
    scheduler_file = root / "scheduler.json"
    command = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
    env = (
        None
        if allowed_failures is None
        else {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": str(allowed_failures)}
    )
    scheduler = _start([*command, "--scheduler-file", str(scheduler_file)], root / "scheduler.log", root, env)
    cluster = None
    try:
        deadline = time.monotonic() + 60
        address = None
        while address is None:
            assert scheduler.poll() is None, (root / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "the scheduler did not write its address in 60 s"
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
                address = json.loads(scheduler_file.read_text())["address"]
            time.sleep(0.05)
        cluster = Cluster(address, scheduler_file, Client(address, timeout=30), {}, root)
        yield cluster
    finally:
        if cluster is not None:
            cluster.client.close()
            for worker in cluster.workers.values():
                _stop(worker)
        _stop(scheduler)


def test_workers_joining_a_running_build_give_the_bytes_of_one_local_process(tmp_path, local_tree):
    """The build starts before any worker, as when SLURM jobs or pods start late: once two workers have
    joined, four shards (two per worker thread) are in flight, not the two of an empty cluster."""
    with _cluster(tmp_path / "cluster") as cluster:
        assert cluster.address.startswith("tcp://127.0.0.1:")
        build = subprocess.Popen(
            _build_command(tmp_path / "out", cluster.address),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while cluster.tasks_in_flight() < 2:  # the build has submitted what it may with no worker
                assert build.poll() is None and time.monotonic() < deadline, cluster.log_tails()
                time.sleep(0.02)
            cluster.add_worker("a")
            cluster.add_worker("b")
            cluster.client.wait_for_workers(2, timeout=60)
            assert sorted(cluster.client.nthreads().values()) == [1, 1]
            most = 0
            while build.poll() is None:
                most = max(most, cluster.tasks_in_flight())
                time.sleep(0.005)
            stdout, stderr = build.communicate(timeout=60)
        finally:
            if build.poll() is None:
                build.kill()
                build.wait()
        assert build.returncode == 0, stderr + cluster.log_tails()
        assert most == 4, f"at most {most} shards were in flight on two one-thread workers"
    assert f"{SHARDS} records from {SHARDS} images" in stdout
    tree = _tree(tmp_path / "out")
    assert sum(name.startswith("records/shard-") for name in tree) == SHARDS
    assert tree == local_tree


def _build_killing_worker_a(cluster: Cluster, out: Path) -> tuple[subprocess.CompletedProcess, int]:
    """Run the build on workers a and b; once a shard is committed and worker a holds a task, SIGKILL a's
    process group (its node goes down at once). Returns the finished build and the shards committed then.

    A one-item shard takes tens of milliseconds, so a task seen running may finish before the kill lands;
    the scheduler then recomputes its lost result instead of counting a failure. So a is frozen first
    (SIGSTOP), and killed only if the scheduler, once a's last messages are in, still has a task running
    there; otherwise it is resumed and the wait goes on."""
    cluster.add_worker("a")
    cluster.add_worker("b")
    cluster.client.wait_for_workers(2, timeout=60)
    victim = cluster.worker_address("a")
    command = _build_command(out, cluster.address)
    build = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, group = time.monotonic() + 60, cluster.workers["a"].pid
        while True:
            assert build.poll() is None, "the build ended before worker a was seen at work"
            assert time.monotonic() < deadline, cluster.log_tails()
            if any((out / "parts").glob("shard-*.json")) and cluster.client.processing(victim)[victim]:
                os.killpg(group, signal.SIGSTOP)
                time.sleep(0.2)  # what a sent before it froze reaches the scheduler
                if cluster.client.processing(victim)[victim]:
                    break
                os.killpg(group, signal.SIGCONT)
            time.sleep(0.005)
        os.killpg(group, signal.SIGKILL)
        committed_at_kill = len(list((out / "parts").glob("shard-*.json")))
        stdout, stderr = build.communicate(timeout=120)
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    return subprocess.CompletedProcess(command, build.returncode, stdout, stderr), committed_at_kill


def test_a_worker_killed_mid_build_leaves_the_output_of_an_uninterrupted_build(tmp_path, local_tree):
    out = tmp_path / "out"
    with _cluster(tmp_path / "cluster") as cluster:
        built, committed_at_kill = _build_killing_worker_a(cluster, out)
        assert built.returncode == 0, built.stderr + cluster.log_tails()
        assert committed_at_kill < SHARDS  # the kill came in the middle of the build
        # the rest ran on worker b alone
        assert list(cluster.client.nthreads()) == [cluster.worker_address("b")]
        assert "Remove worker" in (cluster.root / "scheduler.log").read_text()
    assert f"{SHARDS} records from {SHARDS} images" in built.stdout
    assert _tree(out) == local_tree


def test_a_shard_the_scheduler_gives_up_on_fails_the_build_cleanly_and_resume_ends_it(tmp_path, local_tree):
    """With ``distributed.scheduler.allowed-failures`` 0 (default 3: a shard that kills three workers, e.g.
    out of memory) the scheduler gives up on the shards the killed worker was running: the build stops
    with one error line, not a traceback, and ``--resume`` on the cluster finishes it."""
    out = tmp_path / "out"
    with _cluster(tmp_path / "cluster", allowed_failures=0) as cluster:
        built, committed_at_kill = _build_killing_worker_a(cluster, out)
        assert built.returncode == 2, built.stderr + cluster.log_tails()
        error = built.stderr.splitlines()[-1]  # after the usual warnings about the sample's sources
        assert error.startswith("error: Attempted to run task") and error.endswith("the worker logs say why)")
        assert "Traceback" not in built.stderr and not (out / "manifest.json").exists()
        resumed = subprocess.run(
            [*_build_command(out, cluster.address), "--resume"], capture_output=True, text=True, timeout=120
        )
        assert resumed.returncode == 0, resumed.stderr + cluster.log_tails()
    assert _tree(out) == local_tree


def test_temporaries_of_a_killed_writer_do_not_survive_the_build(tmp_path, local_tree):
    """A writer SIGKILLed between creating a shard's temporary records or part file and renaming it
    leaves it behind (a hidden ``.shard-...tmp.jsonl``, which ``records/*.jsonl`` globs match); the build
    that redoes the shard must not keep it. Planted here, as a build killed whole before committing any
    shard leaves them, then ``--resume``: the window is too narrow to hit by a timed kill."""
    out = tmp_path / "out"
    (out / "records").mkdir(parents=True)
    (out / "parts").mkdir()
    (out / "records" / ".shard-00004.jsonl.k1ll3d0a.tmp.jsonl").write_text('{"image": "torn')
    (out / "parts" / ".shard-00004.json.k1ll3d0b.tmp.json").write_text('{"shard": "shard-000')
    subprocess.run([*_build_command(out), "--resume"], check=True, capture_output=True, timeout=120)
    assert _tree(out) == local_tree
