"""The strict protocol: one-to-one boxes, whole-word classes, absence detection, intervals.

Rules (each differs from BiRD's on purpose):

* the whole response is kept (only chat special tokens are removed, :func:`strict_clean`);
* REC (BiRD: VG): boxes are parsed with the row's dialect (medground rows, in the saved image's
  pixels) or the qwen-vl dialect on a 1000 x 1000 frame (BiRD rows); predicted and ground-truth boxes are matched
  one to one (Hungarian) at IoU >= 0.25, 0.5 and 0.75, giving precision, recall and F1; mean IoU is
  the total IoU of the max-IoU one-to-one assignment divided by the number of ground-truth boxes;
  mean GIoU (generalised IoU: IoU minus the share of the smallest enclosing box that neither box
  covers, in [-1, 1], so a near miss scores above a far one) is the total GIoU of the max-GIoU
  one-to-one assignment, each ground-truth box left without a prediction scoring -1, divided by the
  number of ground-truth boxes.
  A negative question (structure absent) has no ground-truth box: any predicted box there is a
  false positive;
* ROC: the class name (``structure`` field, else the annotation) must appear as whole words in the
  response, up to :mod:`medground.names` canonical spelling and synonyms;
* absence detection over rows that carry a ``negative`` flag: positive = "the structure is not
  present"; predicted positive when the response matches :data:`ABSENCE`;
* answers that are a number (a count): the first number of the response, in digits or a word up to
  twenty, must equal the reference's; mean absolute error over the rows that gave a number;
* REG/MIA (BiRD: RC/MII): text metrics with Java (PTB tokenizer, METEOR) and without (simple
  tokenizer; no METEOR);
* scores per modality, micro (items pooled) and macro (mean over modalities); 95% percentile
  bootstrap intervals for the micro scores (text: ROUGE-L and METEOR item means only, corpus
  BLEU/CIDEr get none) that resample patients when every row states its ``case``, else images (by
  the ``image`` field; a row without one is its own unit), each with all its turns (:func:`units_of`);
  the report names the unit.
"""

from __future__ import annotations

import re

import numpy as np
from scipy.optimize import linear_sum_assignment

from medground.eval.matching import iou_matrix, match_boxes, matched_iou_sum
from medground.eval.metrics import MetricSpec, declares
from medground.eval.postprocess import strict_clean
from medground.eval.rows import PredRow
from medground.eval.stats import BootstrapConfig, Units, aggregate, bootstrap_ci, describe_bootstrap, safe_div
from medground.eval.text_metrics import SPICE_NOTE, TEXT_METRICS, CaptionScorer, java_available, tokenize
from medground.grounding import get_dialect
from medground.names import class_mentioned
from medground.tasks import scorers
from medground.types import Box

__all__ = [
    "ABSENCE",
    "THRESHOLDS",
    "evaluate_strict",
    "first_number",
    "giou",
    "row_boxes",
    "strict_absence",
    "strict_number",
    "strict_roc",
    "strict_text",
    "strict_rec",
    "units_of",
]

THRESHOLDS: tuple[float, ...] = (0.25, 0.5, 0.75)
ABSENCE = re.compile(
    r"\b(?:not\s+(?:present|visible|seen|found|shown|identified|detected|observed|located|depicted|included)"
    r"|absent|there\s+(?:is|are)\s+no|(?:does|do)\s+not\s+(?:contain|show|appear|exist|include|depict)"
    r"|cannot\s+be\s+(?:found|seen|located|identified)|no\s+\w+(?:\s+\w+)?\s+(?:is|are)\s+(?:present|visible|seen)"
    r"|no\s+(?:region|part|area)\s+of\s+(?:this|the)\s+image\s+corresponds)\b",
    re.IGNORECASE,
)
"""Phrases read as "the structure is not present"."""


def units_of(rows: list[PredRow]) -> Units:
    """The bootstrap's resampling unit of each row: its patient (``case``) when every row states one,
    else its image, so that the correlated turns of one image (or patient) are drawn together.

    Rows that state a patient where others do not are grouped by patient, the others by image
    ("patient, else image"). A row with neither is its own unit.
    """
    known = sum(r.case is not None for r in rows)
    name = "patient" if known == len(rows) and rows else "image" if not known else "patient, else image"
    keys = [
        f"patient:{r.case}"
        if r.case is not None
        else f"image:{r.image}"
        if r.image
        else f"row:{r.line}:{r.id}"
        for r in rows
    ]
    return Units.of(keys, name)


def row_boxes(row: PredRow, text: str) -> list[Box]:
    """Canonical boxes in ``text``: the row's dialect at its image size, or on 1000 x 1000 without one."""
    if row.origin == "bird" or row.width is None or row.height is None:
        if not get_dialect(row.dialect).relative:
            raise ValueError(
                f"line {row.line} (id {row.id!r}): {row.dialect} boxes need 'width' and 'height'"
            )
        return [g.box for g in get_dialect(row.dialect).parse(text, 1000, 1000)]
    return [g.box for g in get_dialect(row.dialect).parse(text, row.width, row.height)]


def _prf(prefix: str, key: str) -> dict:
    def precision(s: dict) -> np.ndarray:
        return safe_div(s[key], s["predicted"])

    def recall(s: dict) -> np.ndarray:
        return safe_div(s[key], s["targets"])

    def f1(s: dict) -> np.ndarray:
        # 2TP / (2TP + FP + FN): equals 2PR / (P + R), and is 0 (not undefined) when nothing was predicted
        return safe_div(2 * s[key], s["predicted"] + s["targets"])

    return {f"precision@{prefix}": precision, f"recall@{prefix}": recall, f"f1@{prefix}": f1}


def giou(a: Box, b: Box) -> float:
    """Generalised IoU of two boxes in one frame: IoU - (C - U) / C, with C the area of the smallest box
    enclosing both and U the union's area; 1 for equal boxes, towards -1 as they lie far apart."""
    inter = max(0, min(a.x1, b.x1) - max(a.x0, b.x0)) * max(0, min(a.y1, b.y1) - max(a.y0, b.y0))
    union = a.area + b.area - inter
    hull = (max(a.x1, b.x1) - min(a.x0, b.x0)) * (max(a.y1, b.y1) - min(a.y0, b.y0))
    return inter / union - (hull - union) / hull


def _matched_giou_sum(predicted: list[Box], truth: list[Box]) -> float:
    """Total GIoU of the one-to-one assignment with the largest total GIoU; -1 per unmatched truth box."""
    if not truth:
        return 0.0
    unmatched = max(0, len(truth) - len(predicted))
    if not predicted:
        return -float(unmatched)
    gious = np.asarray([[giou(p, g) for g in truth] for p in predicted], dtype=float)
    rows, cols = linear_sum_assignment(gious, maximize=True)
    return float(gious[rows, cols].sum()) - unmatched


def _rec_metrics() -> list[MetricSpec]:
    """precision, recall, F1 at every threshold (one table each; F1 at 0.5 is the headline), mean IoU."""
    specs = [
        MetricSpec(
            f"{name}@{t}", "headline" if (name, t) == ("f1", 0.5) else "secondary", group=f"IoU >= {t}"
        )
        for t in THRESHOLDS
        for name in ("precision", "recall", "f1")
    ]
    return [*specs, MetricSpec("mean_iou"), MetricSpec("mean_giou")]


@declares(*_rec_metrics())
def strict_rec(rows: list[PredRow], config: BootstrapConfig, task: str = "rec") -> dict:
    """One-to-one REC (grounding) scores; per item: targets, predicted, tp@t, IoU sum, GIoU sum."""
    cols: dict[str, list[float]] = {
        "targets": [],
        "predicted": [],
        "iou_sum": [],
        "giou_sum": [],
        **{f"tp{t}": [] for t in THRESHOLDS},
    }
    groups, items, skipped, scored = [], [], [], []
    for row in rows:
        truth = row_boxes(row, row.annotation)
        if not truth and not row.negative:
            skipped.append(
                {"line": row.line, "id": row.id, "reason": "annotation has no box and is not negative"}
            )
            continue
        predicted = row_boxes(row, strict_clean(row.response))
        ious = iou_matrix(predicted, truth)
        item = {
            "targets": len(truth),
            "predicted": len(predicted),
            "iou_sum": matched_iou_sum(ious),
            "giou_sum": _matched_giou_sum(predicted, truth),
        }
        for t in THRESHOLDS:
            item[f"tp{t}"] = len(match_boxes(ious, t))
        for key, value in item.items():
            cols[key].append(value)
        groups.append(row.modality)
        scored.append(row)
        items.append({"line": row.line, "id": row.id, "modality": row.modality, **item})
    metrics = {}
    for t in THRESHOLDS:
        metrics.update(_prf(str(t), f"tp{t}"))
    metrics["mean_iou"] = lambda s: safe_div(s["iou_sum"], s["targets"])
    metrics["mean_giou"] = lambda s: safe_div(s["giou_sum"], s["targets"])
    arrays = {k: np.asarray(v, dtype=float) for k, v in cols.items()}
    summary = aggregate(arrays, groups, metrics, config, units_of(scored))
    return {"task": task, **summary, "items": items, "skipped": skipped}


@declares(MetricSpec("accuracy", "headline"))
def strict_roc(rows: list[PredRow], config: BootstrapConfig, task: str = "roc") -> dict:
    """Whole-word class accuracy with canonical names and synonyms."""
    correct = [
        class_mentioned(r.structure or strict_clean(r.annotation), strict_clean(r.response)) for r in rows
    ]
    items = [
        {"line": r.line, "id": r.id, "modality": r.modality, "correct": c}
        for r, c in zip(rows, correct, strict=True)
    ]
    cols = {"correct": np.asarray(correct, dtype=float), "items": np.ones(len(rows))}
    metrics = {"accuracy": lambda s: safe_div(s["correct"], s["items"])}
    summary = aggregate(cols, [r.modality for r in rows], metrics, config, units_of(rows))
    return {"task": task, **summary, "items": items}


_NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]
_NUMBER = re.compile(r"\b(\d+|" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)


def first_number(text: str) -> int | None:
    """The first whole number in ``text``, in digits or a word up to twenty ("There are three." -> 3)."""
    match = _NUMBER.search(text)
    if match is None:
        return None
    word = match.group(1).lower()
    return int(word) if word.isdigit() else _NUMBER_WORDS.index(word)


@declares(
    MetricSpec("accuracy", "headline"),
    MetricSpec("mae", direction="lower", digits=3),
    MetricSpec("answered"),
)
def strict_number(rows: list[PredRow], task: str, config: BootstrapConfig) -> dict:
    """Answers that are a number (counts): accuracy (the response's first number equals the reference's;
    no number is wrong), mean absolute error over the rows that gave a number, and the share that did.

    A row whose reference holds no number is skipped and listed with its reason.
    """
    kept, truth, said, skipped = [], [], [], []
    for row in rows:
        reference = first_number(strict_clean(row.annotation))
        if reference is None:
            skipped.append({"line": row.line, "id": row.id, "reason": "annotation holds no number"})
            continue
        kept.append(row)
        truth.append(reference)
        said.append(first_number(strict_clean(row.response)))
    answered = np.asarray([s is not None for s in said], dtype=float)
    error = np.asarray(
        [abs(s - t) if s is not None else 0 for s, t in zip(said, truth, strict=True)], dtype=float
    )
    cols = {
        "correct": (error == 0) * answered,
        "answered": answered,
        "error": error,
        "items": np.ones(len(kept)),
    }
    metrics = {
        "accuracy": lambda s: safe_div(s["correct"], s["items"]),
        "mae": lambda s: safe_div(s["error"], s["answered"]),
        "answered": lambda s: safe_div(s["answered"], s["items"]),
    }
    items = [
        {"line": r.line, "id": r.id, "modality": r.modality, "reference": t, "answer": s}
        for r, t, s in zip(kept, truth, said, strict=True)
    ]
    summary = aggregate(cols, [r.modality for r in kept], metrics, config, units_of(kept))
    return {"task": task, **summary, "items": items, "skipped": skipped}


@declares(MetricSpec("precision"), MetricSpec("recall"), MetricSpec("f1", "headline"))
def strict_absence(rows: list[PredRow], config: BootstrapConfig) -> dict:
    """Precision/recall/F1 of "not present" over rows with a ``negative`` flag (all tasks)."""
    flagged = [r for r in rows if r.negative is not None]
    if not flagged:
        return {"task": "absence", "not_computed": "no row carries a 'negative' flag (BiRD rows do not)"}
    truth = np.asarray([bool(r.negative) for r in flagged])
    said = np.asarray([bool(ABSENCE.search(strict_clean(r.response))) for r in flagged])
    cols = {
        "tp": (truth & said).astype(float),
        "predicted": said.astype(float),
        "targets": truth.astype(float),
    }
    metrics = _prf("absent", "tp")
    metrics = {k.replace("@absent", ""): fn for k, fn in metrics.items()}
    return {
        "task": "absence",
        **aggregate(cols, [r.modality for r in flagged], metrics, config, units_of(flagged)),
    }


def _text_variant(rows: list[PredRow], scorer: CaptionScorer, config: BootstrapConfig) -> dict:
    texts = [strict_clean(r.annotation) for r in rows] + [strict_clean(r.response) for r in rows]
    tokens = tokenize(texts, scorer.tokenizer)
    refs, cands = tokens[: len(rows)], tokens[len(rows) :]
    pooled = scorer.score(refs, cands, pretokenized=True)
    per_group = {}
    for modality in sorted({r.modality for r in rows}):
        idx = [i for i, r in enumerate(rows) if r.modality == modality]
        per_group[modality] = scorer.score(
            [refs[i] for i in idx], [cands[i] for i in idx], pretokenized=True
        ).scores
    names = list(pooled.scores)
    macro = {m: float(np.mean([s[m] for s in per_group.values()])) for m in names}
    units = units_of(rows)
    ci = {
        m: bootstrap_ci(
            {"v": np.asarray(v), "n": np.ones(len(v))}, lambda s: safe_div(s["v"], s["n"]), config, units
        )
        for m, v in pooled.per_item.items()
    }
    return {
        "tokenizer": scorer.tokenizer,
        "per_group": per_group,
        "micro": pooled.scores,
        "macro": macro,
        "ci": ci,
        "bootstrap": describe_bootstrap(config, units, len(rows)),
        "not_computed": pooled.skipped,
        "n": {g: sum(r.modality == g for r in rows) for g in per_group},
    }


@declares(*(MetricSpec(m, "headline" if m == "CIDEr" else "secondary") for m in TEXT_METRICS))
def strict_text(rows: list[PredRow], task: str, config: BootstrapConfig) -> dict:
    """REG/MIA caption metrics twice: ``java`` (PTB + METEOR) and ``no_java`` (simple tokenizer)."""
    with CaptionScorer("simple", meteor=False) as scorer:
        variants = {"no_java": _text_variant(rows, scorer, config)}
    variants["no_java"]["not_computed"] = {"METEOR": "left out of the Java-free variant (METEOR needs Java)"}
    if java_available():
        with CaptionScorer("ptb", meteor=True) as scorer:
            variants["java"] = _text_variant(rows, scorer, config)
    else:
        variants["java"] = {"not_computed": "Java not found: PTB tokenizer and METEOR skipped"}
    return {"task": task, "variants": variants, "notes": [SPICE_NOTE]}


def evaluate_strict(rows: list[PredRow], config: BootstrapConfig | None = None) -> dict[str, dict]:
    """Strict protocol for every task present (each by its ``strict`` scorer in
    :data:`medground.tasks.TASKS`), plus ``absence`` when rows carry negative flags."""
    config = config or BootstrapConfig()
    out: dict[str, dict] = {
        task: fn([r for r in rows if r.task == task], task=task, config=config)
        for task, fn in scorers("strict", {r.task for r in rows})
    }
    absence = strict_absence(rows, config)
    if "not_computed" not in absence:
        out["absence"] = absence
    return out
