"""The build: sources -> shards of work items -> records, run locally or on a Dask cluster.

Work is cut into shards of consecutive items (stable order), so a shard's output depends only on its
items, the sources' protocol label sets and the config. Each shard writes its images and masks, then its records file
``records/shard-NNNNN.jsonl`` (atomically), then ``parts/shard-NNNNN.json`` (its counts, rejections and
the records file's sha256). The part file is the commit mark: ``--resume`` skips shards whose part
matches the config and whose records file still has the recorded hash, and redoes any other shard
whole (outputs are deterministic, so a redo overwrites with the same bytes). Records and parts are
replaced atomically but not fsynced per shard: a crash that loses or tears one fails those checks and
the shard is redone. Before ``manifest.json`` (fsynced, written last with ``skipped.jsonl``) every
records file is fsynced, so a manifest on disk points at records on disk. At most two shards per
worker are in flight, so memory does not grow with the collection.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import shutil
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medground import __version__
from medground.data.records import RecordConfig, make_records, resize_sample, save_sample, split_of
from medground.data.rewrite import Rewriter, rewrite_record
from medground.data.sources import Item, Source
from medground.data.splits import require_one_split_per_patient
from medground.io import atomic_write_bytes, atomic_write_json, atomic_write_text, fsync_path
from medground.io.phash import encode_hashes, stored_hashes
from medground.progress import progress_bar
from medground.types import Rejected

__all__ = [
    "SCHEMA_VERSION",
    "SPLITS",
    "BuildError",
    "ShardSpec",
    "build",
    "plan",
    "plan_shards",
    "process_shard",
]

SPLITS = ("train", "val", "test")

SCHEMA_VERSION = 2
"""Version of the build's output layout, in ``manifest.json`` as ``schema_version``. 1 (manifests without
the key): every region names a mask PNG (``"mask"``). 2: a region carries either ``"mask"`` (a PNG, as
before) or ``"rle"`` (COCO RLE, ``build --masks rle``); read either with :func:`medground.io.region_mask`."""


# Errors that mean a bug in medground rather than a bad input file: they stop the build.
PROGRAMMING_ERRORS = (NameError, AttributeError, ImportError, AssertionError)


class BuildError(RuntimeError):
    """The build cannot start or finish as asked (existing output, config mismatch, duplicate names)."""


@dataclass(frozen=True)
class ShardSpec:
    """A shard: its index and its items."""

    index: int
    items: tuple[Item, ...]

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}"


def plan_shards(sources: list[Source], shard_size: int) -> Iterator[ShardSpec | Rejected]:
    """Shards of ``shard_size`` consecutive items over all sources, and the index rows rejected."""
    buffer: list[Item] = []
    index = 0
    for source in sources:
        for item in source.items():
            if isinstance(item, Rejected):
                yield item
                continue
            buffer.append(item)
            if len(buffer) == shard_size:
                yield ShardSpec(index, tuple(buffer))
                index, buffer = index + 1, []
    if buffer:
        yield ShardSpec(index, tuple(buffer))


def plan(sources: list[Source], config: RecordConfig) -> dict:
    """What a build of ``sources`` would hold, from their items alone (no pixel is read, nothing written).

    Per source: ``items`` (images or volumes), ``splits`` (items per split, drawn from the patient key
    as the records will be), ``unknown_patient`` (items whose patient is unknown: all in train) and
    ``rejected`` (index rows refused at planning); ``warnings``: what the sources said while planning.
    """
    rows = []
    for source in sources:
        splits: Counter = Counter()
        unknown = rejected = 0
        for item in source.items():
            if isinstance(item, Rejected):
                rejected += 1
                continue
            splits[split_of(item.case, config.seed, config.split_ratios)] += 1
            unknown += item.case is None
        rows.append(
            {
                "name": source.name,
                "kind": source.kind,
                "items": sum(splits.values()),
                "splits": {split: splits[split] for split in SPLITS},
                "unknown_patient": unknown,
                "rejected": rejected,
            }
        )
    return {"sources": rows, "warnings": [w for s in sources for w in s.warnings]}


def _count(counts: Counter, record: dict) -> None:
    counts["records"] += 1
    counts[f"modality:{record['modality']}"] += 1
    counts[f"split:{record['split']}"] += 1
    counts[f"source:{record['source']}"] += 1
    for turn in record["turns"]:
        counts["turns"] += 1
        counts[f"task:{turn['task']}"] += 1
        counts["negatives"] += int(turn["negative"])
        if turn["negative"]:
            counts[f"negative_rule:{record['negative_rule']}"] += 1


def _load_item(
    item: Item,
    source: Source,
    protocols: dict[str, list[str]],
    config: RecordConfig,
    out: Path,
    lines: list[str],
    skipped: list[dict],
    counts: Counter,
    rewriter: Rewriter | None,
) -> None:
    for result in source.load(item):
        if isinstance(result, Rejected):
            skipped.append(result.as_dict())
            continue
        sample = resize_sample(result, config.max_side)
        protocol = sample.meta.get("protocol")
        vocabulary = protocols.get(protocol) if protocol is not None else None
        records, regions, rejected = make_records(sample, vocabulary, config)
        skipped.extend(r.as_dict() for r in rejected)
        if not records:
            continue
        save_sample(out, sample, regions, config.masks, config.keep_image_metadata)
        phash = encode_hashes(stored_hashes(np.asarray(sample.image)))  # for check-splits: no re-read
        counts["images"] += 1
        counts["regions"] += len(regions)
        if sample.case is None:
            counts[f"unknown_patient:{sample.source}"] += 1
        for record in records:
            record["phash"] = phash
            if rewriter is not None:
                record, reasons = rewrite_record(record, rewriter)
                counts["llm_kept_original"] += len(reasons)
            _count(counts, record)
            lines.append(json.dumps(record, ensure_ascii=False))


def process_shard(
    spec: ShardSpec,
    sources: dict[str, Source],
    protocols: dict[str, dict[str, list[str]]],
    config: RecordConfig,
    out_dir: str,
    fingerprint: str,
    rewriter: Rewriter | None = None,
) -> dict:
    """Build one shard (runs in a worker); returns its part (also written to ``parts/``).

    ``protocols``: per source, protocol id -> the structures it labels exhaustively (negatives)."""
    out = Path(out_dir)
    lines: list[str] = []
    skipped: list[dict] = []
    counts: Counter = Counter()
    for item in spec.items:
        counts[f"items:{item.source}"] += 1
        try:
            _load_item(
                item,
                sources[item.source],
                protocols[item.source],
                config,
                out,
                lines,
                skipped,
                counts,
                rewriter,
            )
        except PROGRAMMING_ERRORS:
            raise
        except Exception as error:  # noqa: BLE001 - one bad file must not stop a build; it is reported
            reason = f"unexpected {type(error).__name__} while processing: {error}"
            skipped.append(Rejected(item.payload.get("image", item.key), reason, item.source).as_dict())
    data = ("".join(line + "\n" for line in lines)).encode("utf-8")
    atomic_write_bytes(out / "records" / f"{spec.name}.jsonl", data, fsync=False)
    part = {
        "shard": spec.name,
        "fingerprint": fingerprint,
        "items": len(spec.items),
        "sha256": hashlib.sha256(data).hexdigest(),
        "counts": dict(sorted(counts.items())),
        "skipped": skipped,
    }
    atomic_write_json(out / "parts" / f"{spec.name}.json", part, fsync=False)
    return part


def _finished_part(out: Path, spec: ShardSpec, fingerprint: str) -> dict | None:
    """The part of a shard that a previous run completed with the same config, if it is intact."""
    part_path, records_path = out / "parts" / f"{spec.name}.json", out / "records" / f"{spec.name}.jsonl"
    if not part_path.exists() or not records_path.exists():
        return None
    try:
        part = json.loads(part_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    if part.get("fingerprint") != fingerprint:
        raise BuildError(
            f"{out} was built with another config or other sources; use a new --out or --overwrite"
        )
    intact = part.get("sha256") == hashlib.sha256(records_path.read_bytes()).hexdigest()
    return part if intact else None


def _prepare(out: Path, resume: bool, overwrite: bool) -> None:
    existing = (out / "parts").exists() or (out / "manifest.json").exists()
    if existing and overwrite:
        for name in ("records", "parts", "images", "masks", "report"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("manifest.json", "skipped.jsonl"):
            (out / name).unlink(missing_ok=True)
    elif existing and not resume:
        raise BuildError(
            f"{out} already holds a build; pass --resume to continue it or --overwrite to redo it"
        )
    out.mkdir(parents=True, exist_ok=True)


def _fingerprint(
    sources: list[Source], config: RecordConfig, shard_size: int, rewriter: Rewriter | None
) -> str:
    described = [{"kind": s.kind, "name": s.name} for s in sources]
    llm = None if rewriter is None else [rewriter.url, rewriter.model]
    text = json.dumps(
        {"sources": described, "config": asdict(config), "shard_size": shard_size, "llm": llm},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


Submit = Callable[..., Any]


def _run_bounded(
    submit: Submit,
    wait: Callable,
    specs: Iterator[ShardSpec | Rejected],
    limit: Callable[[], int],
    job: Callable[[ShardSpec], tuple],
    on_done: Callable[[dict], None],
    on_skip: Callable[[ShardSpec | Rejected], bool],
) -> None:
    """Submit shards with at most ``limit()`` in flight (asked again before each shard: cluster workers
    come and go); ``on_skip`` takes plan rejections and finished shards."""
    pending: set = set()
    for spec in specs:
        if on_skip(spec):
            continue
        pending.add(submit(process_shard, *job(spec)))
        while len(pending) >= limit():  # a loop: the limit shrinks when workers leave
            done, pending = wait(pending, return_when="FIRST_COMPLETED")
            pending = set(pending)
            for future in done:
                on_done(future.result())
    while pending:
        done, pending = wait(pending, return_when="FIRST_COMPLETED")
        pending = set(pending)
        for future in done:
            on_done(future.result())


def build(
    sources: list[Source],
    out_dir: str | Path,
    config: RecordConfig,
    *,
    workers: int = 1,
    scheduler: str | Any | None = None,
    shard_size: int = 32,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    rewriter: Rewriter | None = None,
) -> dict:
    """Run a build and return its manifest. ``scheduler``: a Dask address or a ``distributed.Client``;
    ``rewriter``: optional LLM rephrasing of every turn (verified; the original is kept when it fails)."""
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BuildError(f"two sources are named {duplicates}; give them distinct folder names")
    if workers < 1 or shard_size < 1:
        raise BuildError(f"workers and shard size must be >= 1, got {workers} and {shard_size}")
    out = Path(out_dir)
    _prepare(out, resume, overwrite)
    fingerprint = _fingerprint(sources, config, shard_size, rewriter)
    by_name = {s.name: s for s in sources}
    protocols = {s.name: s.protocols() for s in sources}
    planned = plan(sources, config)
    total = sum(row["items"] for row in planned["sources"])
    unknown = {row["name"]: row["unknown_patient"] for row in planned["sources"] if row["unknown_patient"]}
    notes = list(planned["warnings"])
    notes += [
        f"{name}: the patients of {n} of its items are unknown (no case column, no patient key in the names, "
        'or meta.json "cases": "unknown"); they all go to train. Add a case column, or "cases": "image" '
        "if each image is its own patient, to split them"
        for name, n in sorted(unknown.items())
    ]
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    parts: dict[int, dict] = {}
    plan_rejections: list[dict] = []
    with progress_bar(total, "building", enabled=progress) as advance:

        def on_skip(spec: ShardSpec | Rejected) -> bool:
            if isinstance(spec, Rejected):
                plan_rejections.append(spec.as_dict())
                return True
            finished = _finished_part(out, spec, fingerprint) if resume else None
            if finished is not None:
                parts[spec.index] = finished
                advance(len(spec.items))
            return finished is not None

        def on_done(part: dict) -> None:
            parts[int(part["shard"].split("-")[1])] = part
            advance(part["items"])

        def job(spec: ShardSpec) -> tuple:
            return spec, by_name, protocols, config, str(out), fingerprint, rewriter

        specs = plan_shards(sources, shard_size)
        if scheduler is not None:
            _run_dask(scheduler, specs, job, on_done, on_skip)
        elif workers == 1:
            for spec in specs:
                if not on_skip(spec):
                    on_done(process_shard(*job(spec)))
        else:
            with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
                _run_bounded(
                    pool.submit, concurrent.futures.wait, specs, lambda: 2 * workers, job, on_done, on_skip
                )
    # The build checks its own splits (medground.data.splits): a patient key in two splits raises
    # SplitLeakError naming it, before any manifest is written; keys of two sources that differ only in
    # spelling (case_00220, Case_00220) and sit in two splits are a warning: maybe one patient.
    lookalike = require_one_split_per_patient(
        out, [out / "records" / f"{parts[i]['shard']}.jsonl" for i in sorted(parts)]
    )
    for group in lookalike:
        note = (
            f"patient keys {', '.join(repr(k) for k in group.keys)} of different sources look alike and sit "
            'in different splits; if they are one patient, give them one key with meta.json "case_alias" '
            "(`medground check-splits` lists them)"
        )
        notes.append(note)
        warnings.warn(note, UserWarning, stacklevel=2)
    manifest = _finalize(
        out, sources, config, fingerprint, [parts[i] for i in sorted(parts)], plan_rejections, notes
    )
    return manifest


def _run_dask(
    scheduler: str | Any, specs: Iterator, job: Callable, on_done: Callable, on_skip: Callable
) -> None:
    from distributed import Client, KilledWorker, wait

    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        # Two shards per worker thread that is there now: on SLURM or Kubernetes workers join as their jobs
        # start, often after the build, and leave; one scheduler round trip per shard.
        limit = lambda: 2 * max(1, sum(client.nthreads().values()))  # noqa: E731
        submit = lambda fn, *args: client.submit(fn, *args, pure=False)  # noqa: E731
        _run_bounded(submit, wait, specs, limit, job, on_done, on_skip)
    except KilledWorker as error:  # the scheduler gave up on a shard after the workers it ran on died
        raise BuildError(
            f"{error}. The shards finished so far are kept: rerun with --resume (if this shard kills every "
            "worker it runs on, e.g. out of memory, the worker logs say why)"
        ) from error
    finally:
        if client is not scheduler:
            client.close()


def _remove_dead_writers_temporaries(out: Path) -> None:
    """Delete the temporary files (``.shard-NNNNN.jsonl.XXXXXXXX.tmp.jsonl``, see ``medground.io.atomic``)
    that a writer killed between creating and renaming them left in ``records/`` and ``parts/``.

    A SIGKILLed Dask worker or a power cut leaves one behind; its shard is redone elsewhere, but the
    leftover would be read as one more (torn) shard by everything that globs ``records/*.jsonl``. Called
    once every shard is done, when no writer of this build is alive."""
    for folder in ("records", "parts"):
        for leftover in (out / folder).glob(".shard-*.tmp*"):
            leftover.unlink(missing_ok=True)


def _finalize(
    out: Path,
    sources: list[Source],
    config: RecordConfig,
    fingerprint: str,
    parts: list[dict],
    plan_rejections: list[dict],
    notes: list[str],
) -> dict:
    _remove_dead_writers_temporaries(out)
    totals: Counter = Counter()
    skipped = list(plan_rejections)
    for part in parts:
        totals.update(part["counts"])
        skipped.extend(part["skipped"])
        fsync_path(out / "records" / f"{part['shard']}.jsonl")  # on disk before the manifest that lists it
    if parts:
        fsync_path(out / "records")
    atomic_write_text(
        out / "skipped.jsonl", "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in skipped)
    )

    def group(prefix: str) -> dict[str, int]:
        return {k.split(":", 1)[1]: v for k, v in sorted(totals.items()) if k.startswith(prefix + ":")}

    manifest = {
        "schema_version": SCHEMA_VERSION,
        "medground_version": __version__,
        "fingerprint": fingerprint,
        "seed": config.seed,
        "config": asdict(config),
        "sources": [{"name": s.name, "kind": s.kind} for s in sources],
        "counts": {
            "records": totals["records"],
            "images": totals["images"],
            "regions": totals["regions"],
            "turns": totals["turns"],
            "negatives": totals["negatives"],
            "negatives_by_rule": group("negative_rule"),
            "unknown_patient_images": group("unknown_patient"),
            "skipped": len(skipped),
            "llm_turns_kept_original": totals["llm_kept_original"],
            "tasks": group("task"),
            "modalities": group("modality"),
            "splits": group("split"),
            "sources": group("source"),
            "items": group("items"),
        },
        "warnings": notes,
        "shards": [
            {
                "file": f"records/{p['shard']}.jsonl",
                "records": p["counts"].get("records", 0),
                "sha256": p["sha256"],
            }
            for p in parts
        ],
    }
    atomic_write_json(out / "manifest.json", manifest)
    return manifest
