"""Held-out scoring of a grounding model against two data-only baselines, computed in one pass.

Rules (same for the model and the baselines):

- REC Acc@0.5: over non-negative ``rec`` turns; a turn is a hit when the FIRST predicted box has
  IoU >= 0.5 with ANY ground-truth box of the turn; no parsed box is a miss.
- Prior box: the mean of all training boxes of the asked structure, each normalised by its image's
  width/height, scaled to the test image (the mean over all structures when the structure is unseen).
- ROC accuracy: over non-negative ``roc`` turns; the predicted name is the known structure name
  (training + test vocabulary) that occurs first in the response as whole words (the longest at one
  position), both spelled by :func:`medground.names.canonical_name` (case, punctuation and plurals
  do not matter: "the Kidneys" names "kidney"); it must name the turn's structure in that spelling.
- Majority class: always answer the most frequent structure of the training ``roc`` turns.
- Multi-structure ROC: the ROC turns of images with at least two distinct region names, where naming
  the structure cannot be done by recognising the dataset; its baseline is each dataset's own majority
  class (the most frequent structure of that dataset's training ``roc`` turns; the overall majority
  when the dataset has none, i.e. a dataset held out whole). A record's dataset is its ``source``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from medground.grounding import get_dialect
from medground.names import canonical_name, mention_words
from medground.tasks import task_spec
from medground.types import Box

__all__ = [
    "HIT_COLUMNS",
    "dataset_majority_classes",
    "evaluate_predictions",
    "majority_class",
    "prior_boxes",
    "prior_box_for",
    "read_jsonl",
    "roc_label",
    "turn_hits",
]


# the tasks the baselines answer (prior box: REC, majority class: ROC), looked up in the task registry
# so that renaming a task there fails here at import instead of silently scoring no turn
_BOX_TASK, _CLASS_TASK = task_spec("rec").name, task_spec("roc").name


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file."""
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def prior_boxes(train_records: list[dict[str, Any]]) -> dict[str, tuple[float, float, float, float]]:
    """Structure name -> mean normalised box (x0/w, y0/h, x1/w, y1/h) over every training region instance."""
    sums: dict[str, list[float]] = {}
    counts: Counter[str] = Counter()
    for record in train_records:
        w, h = float(record["width"]), float(record["height"])
        for region in record.get("regions", []):
            if not region.get("box"):
                continue
            x0, y0, x1, y1 = region["box"]
            acc = sums.setdefault(region["name"], [0.0, 0.0, 0.0, 0.0])
            for k, v in enumerate((x0 / w, y0 / h, x1 / w, y1 / h)):
                acc[k] += v
            counts[region["name"]] += 1
    return {
        name: (s[0] / counts[name], s[1] / counts[name], s[2] / counts[name], s[3] / counts[name])
        for name, s in sums.items()
    }


def prior_box_for(
    priors: dict[str, tuple[float, float, float, float]], name: str, width: int, height: int
) -> Box:
    """The prior box of ``name`` in pixels of a width x height image (all-structure mean if unseen)."""
    if name in priors:
        nx0, ny0, nx1, ny1 = priors[name]
    else:
        values = list(priors.values()) or [(0.0, 0.0, 1.0, 1.0)]
        nx0, ny0, nx1, ny1 = (sum(v[k] for v in values) / len(values) for k in range(4))
    x0, y0 = min(width - 1, round(nx0 * width)), min(height - 1, round(ny0 * height))
    return Box(
        x0, y0, max(x0 + 1, min(width, round(nx1 * width))), max(y0 + 1, min(height, round(ny1 * height)))
    )


def _roc_structures(record: dict[str, Any]) -> list[str]:
    return [
        t.get("structure", "")
        for t in record.get("turns", [])
        if t.get("task") == _CLASS_TASK and not t.get("negative")
    ]


def _most_frequent(counts: Counter[str]) -> str:
    if not counts:
        return ""
    best = max(counts.values())
    return sorted(name for name, c in counts.items() if c == best)[0]


def majority_class(train_records: list[dict[str, Any]]) -> str:
    """Most frequent structure among the training ``roc`` turns (ties: alphabetical first)."""
    return _most_frequent(Counter(s for r in train_records for s in _roc_structures(r)))


def dataset_majority_classes(train_records: list[dict[str, Any]]) -> dict[str, str]:
    """Dataset (record ``source``) -> its most frequent training ``roc`` structure (ties: alphabetical)."""
    counts: dict[str, Counter[str]] = {}
    for record in train_records:
        counts.setdefault(record.get("source", ""), Counter()).update(_roc_structures(record))
    return {source: _most_frequent(c) for source, c in counts.items() if c}


def roc_label(response: str, vocabulary: list[str]) -> str | None:
    """The vocabulary name whose canonical spelling occurs first in ``response`` as a run of whole
    words (the one of most words on ties, then the first in ``vocabulary``); None when none occurs."""
    words = mention_words(response)
    best: tuple[int, int, int, str] | None = None
    for rank, name in enumerate(vocabulary):
        form = canonical_name(name).split()
        starts = (i for i in range(len(words) - len(form) + 1) if form and words[i : i + len(form)] == form)
        start = next(starts, None)
        if start is not None and (best is None or (start, -len(form), rank) < best[:3]):
            best = (start, -len(form), rank, name)
    return best[3] if best else None


def _gt_boxes(record: dict[str, Any], turn: dict[str, Any]) -> list[Box]:
    regions = record.get("regions", [])
    return [Box.from_list(regions[i]["box"]) for i in turn.get("regions", []) if regions[i].get("box")]


def _pred_boxes(row: dict[str, Any]) -> list[Box]:
    if "boxes" in row:
        return [Box.from_list(b["box"]) for b in row["boxes"]]
    return [g.box for g in get_dialect(row["dialect"]).parse(row["response"], row["width"], row["height"])]


HIT_COLUMNS = (
    "rec",
    "rec_model",
    "rec_prior",
    "roc",
    "roc_model",
    "roc_majority",
    "roc2",
    "roc2_model",
    "roc2_majority",
)
"""Per-row 0/1 columns of :func:`turn_hits`: ``rec``/``roc``/``roc2`` mark the rows scored for that
count (``roc2``: ROC on an image with >= 2 structures), the others are hits of the model or baseline."""


def turn_hits(
    rows: list[dict[str, Any]], test_records: list[dict[str, Any]], train_records: list[dict[str, Any]]
) -> dict[str, np.ndarray]:
    """Per-row scores behind :func:`evaluate_predictions`: {column of :data:`HIT_COLUMNS`: (N,) 0/1 int
    array}, N = len(rows), in row order; negative turns and other tasks are all-zero rows. Summing a
    column over any subset of rows gives that subset's counts, so a bootstrap over patients resamples
    these columns (see ``medground.eval.stats.bootstrap_ci``) instead of re-scoring the rows."""
    by_id = {r["id"]: r for r in test_records}
    priors, majority = prior_boxes(train_records), majority_class(train_records)
    own_majority = dataset_majority_classes(train_records)
    vocabulary = sorted({reg["name"] for r in train_records + test_records for reg in r.get("regions", [])})
    hits = {name: np.zeros(len(rows), dtype=np.int64) for name in HIT_COLUMNS}
    for i, row in enumerate(rows):
        record = by_id[row["record"]]
        turn = record["turns"][row["turn"]]
        if turn.get("negative"):
            continue
        if turn["task"] == _BOX_TASK:
            gt = _gt_boxes(record, turn)
            pred = _pred_boxes(row)
            prior = prior_box_for(priors, turn["structure"], record["width"], record["height"])
            hits["rec"][i] = 1
            hits["rec_model"][i] = bool(pred) and any(pred[0].iou(g) >= 0.5 for g in gt)
            hits["rec_prior"][i] = any(prior.iou(g) >= 0.5 for g in gt)
        elif turn["task"] == _CLASS_TASK:
            asked = canonical_name(turn["structure"])
            predicted = roc_label(row["response"], vocabulary)
            hit = predicted is not None and canonical_name(predicted) == asked
            hits["roc"][i] = 1
            hits["roc_model"][i] = hit
            hits["roc_majority"][i] = canonical_name(majority) == asked
            if len({reg["name"] for reg in record.get("regions", [])}) >= 2:
                baseline = own_majority.get(record.get("source", ""), majority)
                hits["roc2"][i] = 1
                hits["roc2_model"][i] = hit
                hits["roc2_majority"][i] = canonical_name(baseline) == asked
    return hits


def evaluate_predictions(
    rows: list[dict[str, Any]], test_records: list[dict[str, Any]], train_records: list[dict[str, Any]]
) -> dict[str, Any]:
    """REC Acc@0.5 and ROC accuracy of the model and of the prior-box / majority-class baselines, and ROC
    accuracy on multi-structure images against each dataset's own majority class (``roc_multi_*``):
    the sums of :func:`turn_hits`' columns."""
    tally = {name: int(column.sum()) for name, column in turn_hits(rows, test_records, train_records).items()}

    def rate(hits: str, total: str) -> float | None:
        return tally[hits] / tally[total] if tally[total] else None

    return {
        "rec_turns": tally["rec"],
        "rec_acc50_model": rate("rec_model", "rec"),
        "rec_acc50_prior_box": rate("rec_prior", "rec"),
        "roc_turns": tally["roc"],
        "roc_acc_model": rate("roc_model", "roc"),
        "roc_acc_majority": rate("roc_majority", "roc"),
        "majority_class": majority_class(train_records),
        "roc_multi_turns": tally["roc2"],
        "roc_multi_acc_model": rate("roc2_model", "roc2"),
        "roc_multi_acc_dataset_majority": rate("roc2_majority", "roc2"),
    }
