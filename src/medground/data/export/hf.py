"""A build's records as an HF ``datasets.Dataset``, with features that datasets >= 3.0 reads.

Lists are written as ``[feature]`` (datasets 3.x and 4+ both read it; ``datasets.List`` exists from 4.0
only, and ``Sequence`` of a dict is a dict of lists in 3.x).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medground.data.export.common import shard_paths

__all__ = ["load_hf_dataset", "record_features"]


def record_features() -> Any:
    """HF datasets Features of one record (the schema in the data engine's docs)."""
    from datasets import Features, Value

    text = Value("string")
    return Features(
        {
            "id": text,
            "image": text,
            "width": Value("int32"),
            "height": Value("int32"),
            "modality": text,
            "source": text,
            "case": text,
            "split": text,
            "plane": text,
            "body_region": text,
            "dialect": text,
            "tasks": [text],
            "conversations": [{"from": text, "value": text}],
            "turns": [
                {"task": text, "structure": text, "regions": [Value("int32")], "negative": Value("bool")}
            ],
            "regions": [
                {
                    "name": text,
                    "key": text,
                    "box": [Value("int32")],
                    "mask": text,
                    "rle": {"size": [Value("int32")], "counts": text},
                    "instance": Value("int32"),
                    "area": Value("int64"),
                    "position": text,
                }
            ],
        }
    )


def _features_for(paths: list[Path]) -> Any:
    """Known fields get fixed types (so all-null or empty columns load); unknown top-level keys are inferred."""
    import pyarrow as pa
    from datasets import Features, Value

    features = record_features()
    sample: list[dict] = []
    for path in paths:  # the first 200 records decide the types of unknown keys
        with open(path, encoding="utf-8") as f:
            sample.extend(
                json.loads(line) for line, _ in zip(f, range(200 - len(sample)), strict=False) if line.strip()
            )
        if len(sample) >= 200:
            break
    extra = sorted({key for rec in sample for key in rec} - set(features))
    if extra:
        inferred = Features.from_arrow_schema(
            pa.Table.from_pylist([{k: r.get(k) for k in extra} for r in sample]).schema
        )
        for key in extra:
            features[key] = Value("string") if inferred[key] == Value("null") else inferred[key]
    return features


def load_hf_dataset(out_dir: Path, split: str | None = None, cache_dir: Path | None = None) -> Any:
    """The records of build folder ``out_dir`` as a ``datasets.Dataset`` (one row per record).

    ``split``: keep only rows of that split. ``cache_dir``: HF datasets cache (default: its own default).
    """
    from datasets import load_dataset

    paths = shard_paths(out_dir)
    ds = load_dataset(
        "json",
        data_files=[str(p) for p in paths],
        split="train",
        features=_features_for(paths),
        cache_dir=str(cache_dir) if cache_dir else None,
    )
    if split is not None:
        ds = ds.filter(lambda s: s == split, input_columns="split")
    return ds
