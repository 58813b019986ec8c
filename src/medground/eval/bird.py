"""BiRD's evaluation protocol, reproduced rule for rule from its repository's scripts.

Sources (ShawnHuang497/BiRD, tests/models/BiRD/): ``regularization.py`` (response clean-up, see
:func:`medground.eval.postprocess.bird_regularize`), ``eval_VG_score_modality.py`` (VG recall@0.5),
``eval_RO_score_modality.py`` (ROC accuracy), ``eval_GC_score_modality.py`` and
``eval_MII_score_modality.py`` (RC and MIA caption metrics). Quirks kept on purpose:

* per-modality scores are ``hits / (count + 1e-8)`` (so 1/1 gives 0.99999999, 0/0 gives 0) and the
  mean is their plain sum over the eight modalities divided by 8, absent modalities included (VG, ROC);
* VG: a ground-truth box is found by the *first* predicted box with IoU > 0.5, and one predicted box
  may find several ground-truth boxes; rows whose annotation has no ``<box>`` are skipped;
* RC/MIA: each metric is rounded to 6 decimals per modality, the mean of the rounded values is
  rounded again; numbers are fractions (not x100), as the scripts print them.

Where the scripts would crash we go on and say so in ``notes``/``skipped``: rows of a modality that
is none of the eight (photography, OCT, ... :func:`medground.modalities.medgrit_modality`) are counted
under ``"other"``, scored and reported beside the eight but never in the 8-modality mean (KeyError
there); an RC/MIA modality without items is left out of the mean (IndexError in pycocotools there),
and item ids need not be integers (``int(id)`` there).
"""

from __future__ import annotations

import re

import numpy as np

from medground.eval.metrics import MetricSpec, declares
from medground.eval.postprocess import bird_regularize
from medground.eval.rows import BIRD_MODALITIES, PredRow
from medground.eval.text_metrics import SPICE_NOTE, TEXT_METRICS, CaptionScorer, tokenize
from medground.grounding import get_dialect
from medground.modalities import OTHER
from medground.tasks import scorers

__all__ = ["bird_box_iou", "bird_roc", "bird_text", "bird_vg", "evaluate_bird"]

_QWEN_VL = get_dialect("qwen-vl-grid")  # BiRD reads <box>(.*?)</box>, else bare (x,y),(x,y) pairs
_EPS = 1e-8
_LINE_BREAK = re.compile("[\r\x0b\x0c\x85\u2028\u2029]")


def _floats(text: str) -> list[float]:
    """BiRD's get_float_bboxs for one box: drop parentheses, split on commas, float each piece."""
    return [float(piece) for piece in text.replace("(", "").replace(")", "").split(",")]


def bird_box_iou(predicted: str, target: str) -> float:
    """IoU of two box strings such as ``"(1,2),(30,40)"``, as BiRD's box_iou computes it (no +1 pixel).

    A predicted box that does not parse into a valid (1, 4) array gives 0.0 (the script's bare
    ``except``); a target that is not numbers raises ValueError (the script crashes there too).
    Degenerate boxes follow numpy: 0/0 gives NaN (never > 0.5).
    """
    target_box = np.array([_floats(target)])
    try:
        pred_box = np.array([_floats(predicted)])
        with np.errstate(divide="ignore", invalid="ignore"):
            area1 = (pred_box[:, 2] - pred_box[:, 0]) * (pred_box[:, 3] - pred_box[:, 1])
            area2 = (target_box[:, 2] - target_box[:, 0]) * (target_box[:, 3] - target_box[:, 1])
            lt = np.maximum(pred_box[:, np.newaxis, :2], target_box[:, :2])
            rb = np.minimum(pred_box[:, np.newaxis, 2:], target_box[:, 2:])
            wh = np.clip(rb - lt, a_min=0, a_max=None)
            inter = wh[:, :, 0] * wh[:, :, 1]
            union = area1[:, None] + area2 - inter
            return float((inter / union)[0][0])
    except Exception:  # the original catches everything here and scores 0
        return 0.0


def _skip(row: PredRow, reason: str) -> dict:
    return {"line": row.line, "id": row.id, "reason": reason}


def _modality_scores(counts: dict[str, list[int]]) -> tuple[dict[str, float], float]:
    scores = {m: counts[m][0] / (counts[m][1] + _EPS) for m in BIRD_MODALITIES}
    return scores, sum(scores.values()) / len(scores)


def _group(row: PredRow) -> str:
    """The BiRD key a row counts under, or "other"."""
    return row.bird_modality or OTHER


def _other_modalities(rows: list[PredRow]) -> dict[str, int]:
    """Modality name -> rows, for the rows outside BiRD's eight."""
    names = sorted({r.modality for r in rows if r.bird_modality is None})
    return {m: sum(r.modality == m and r.bird_modality is None for r in rows) for m in names}


def _other(rows: list[PredRow], hits: int, count: int, names: tuple[str, str]) -> dict | None:
    """The "other" bucket of VG/ROC: its modalities (rows each), hits, count and score; None if empty."""
    modalities = _other_modalities(rows)
    if not modalities:
        return None
    return {
        "modalities": modalities,
        "score": hits / (count + _EPS),
        "counts": {names[0]: hits, names[1]: count},
    }


def _other_note(other: dict | None) -> list[str]:
    if not other:
        return []
    listed = ", ".join(f"{m} ({n} rows)" for m, n in other["modalities"].items())
    return [
        f"modalities outside BiRD's eight counted as 'other': {listed}; reported apart, not in the "
        "8-modality mean (BiRD's scripts would stop with a KeyError)"
    ]


@declares(MetricSpec("recall@0.5", "headline", digits=6))
def bird_vg(rows: list[PredRow], task: str = "rec") -> dict:
    """VG recall@0.5 per BiRD modality and their 8-modality mean (eval_VG_score_modality.py)."""
    counts = {m: [0, 0] for m in (*BIRD_MODALITIES, OTHER)}
    skipped, items, scored = [], [], []
    for row in rows:
        response = bird_regularize(row.response)
        targets = _QWEN_VL.box_contents(row.annotation)
        predicted = _QWEN_VL.box_contents(response)
        fallback = not predicted
        if fallback:
            predicted = _QWEN_VL.bare_pattern.findall(response)
        if not targets:
            skipped.append(_skip(row, "annotation has no <box>"))
            continue
        try:
            found = sum(any(bird_box_iou(p, t) > 0.5 for p in predicted) for t in targets)
        except ValueError as error:
            raise ValueError(
                f"line {row.line} (id {row.id!r}): annotation box is not numbers ({error}); "
                "fix the annotation, BiRD's script stops here too"
            ) from None
        counts[_group(row)][0] += found
        counts[_group(row)][1] += len(targets)
        scored.append(row)
        items.append(
            {
                "line": row.line,
                "id": row.id,
                "modality": _group(row),
                "targets": len(targets),
                "predicted": len(predicted),
                "found": found,
                "fallback_format": fallback and bool(predicted),
            }
        )
    scores, mean = _modality_scores(counts)
    other = _other(scored, *counts[OTHER], ("found", "targets"))
    dialects = sorted({r.dialect for r in rows if r.dialect != _QWEN_VL.name})
    notes = [f"BiRD's protocol reads qwen-vl <box> text only; some rows use {dialects}"] if dialects else []
    return {
        "task": task,
        "notes": notes + _other_note(other),
        "metric": "recall@0.5",
        "per_modality": scores,
        "mean": mean,
        "counts": {m: {"found": counts[m][0], "targets": counts[m][1]} for m in BIRD_MODALITIES},
        "other": other,
        "items": items,
        "skipped": skipped,
    }


@declares(MetricSpec("accuracy", "headline", digits=6))
def bird_roc(rows: list[PredRow], task: str = "roc") -> dict:
    """ROC accuracy per BiRD modality and the 8-modality mean (eval_RO_score_modality.py).

    Correct when every token of ``annotation.lower().split(" ")`` is a substring of the lower-cased
    response (split on single spaces, so a double space makes an empty token, which always matches).
    """
    counts = {m: [0, 0] for m in (*BIRD_MODALITIES, OTHER)}
    items = []
    for row in rows:
        response = bird_regularize(row.response).lower()
        correct = all(token in response for token in row.annotation.lower().split(" "))
        counts[_group(row)][0] += int(correct)
        counts[_group(row)][1] += 1
        items.append({"line": row.line, "id": row.id, "modality": _group(row), "correct": correct})
    scores, mean = _modality_scores(counts)
    other = _other(rows, *counts[OTHER], ("correct", "items"))
    return {
        "task": task,
        "notes": _other_note(other),
        "metric": "accuracy",
        "per_modality": scores,
        "mean": mean,
        "counts": {m: {"correct": counts[m][0], "items": counts[m][1]} for m in BIRD_MODALITIES},
        "other": other,
        "items": items,
        "skipped": [],
    }


def _bird_tokens(rows: list[PredRow]) -> tuple[list[str], list[str]]:
    """PTB tokens of references and regularized responses, in one Java call when that is equivalent.

    A text with a line break other than ``\\n`` (which pycocoevalcap turns into a space) makes the
    tokenizer emit extra lines and shifts later captions of the same call; then the calls are made as
    BiRD's scripts make them (per modality, references and candidates apart) so the shift is the same.
    """
    refs = [r.annotation for r in rows]
    cands = [bird_regularize(r.response) for r in rows]
    if not any(_LINE_BREAK.search(t) for t in refs + cands):
        tokens = tokenize(refs + cands, "ptb")
        return tokens[: len(rows)], tokens[len(rows) :]
    out_refs, out_cands = [""] * len(rows), [""] * len(rows)
    for modality in (*BIRD_MODALITIES, OTHER):
        idx = [i for i, r in enumerate(rows) if _group(r) == modality]
        if idx:
            for target, source in ((out_refs, refs), (out_cands, cands)):
                for i, token in zip(idx, tokenize([source[i] for i in idx], "ptb"), strict=True):
                    target[i] = token
    return out_refs, out_cands


@declares(*(MetricSpec(m, "headline" if m == "CIDEr" else "secondary", digits=6) for m in TEXT_METRICS))
def bird_text(rows: list[PredRow], task: str) -> dict:
    """RC or MIA caption metrics per BiRD modality, PTB tokenizer, one reference per item.

    Rows outside the eight are scored together as ``other`` (reported, not in the mean).
    """
    per_modality: dict[str, dict[str, float]] = {}
    other_scores: dict[str, float] = {}
    missing, not_computed = [], {}
    with CaptionScorer("ptb", meteor=True) as scorer:
        # without Java the scorer reports every metric as skipped and never reads the texts
        refs, cands = _bird_tokens(rows) if scorer.java else ([r.annotation for r in rows],) * 2
        for modality in (*BIRD_MODALITIES, OTHER):
            idx = [i for i, r in enumerate(rows) if _group(r) == modality]
            if not idx:
                missing += [] if modality == OTHER else [modality]
                continue
            result = scorer.score([refs[i] for i in idx], [cands[i] for i in idx], pretokenized=True)
            scores = {m: round(v, 6) for m, v in result.scores.items()}
            if modality == OTHER:
                other_scores = scores
            else:
                per_modality[modality] = scores
            not_computed.update(result.skipped)
    mean = {
        m: round(sum(s[m] for s in per_modality.values()) / len(per_modality), 6)
        for m in TEXT_METRICS
        if per_modality and all(m in s for s in per_modality.values())
    }
    modalities = _other_modalities(rows)
    other = {"modalities": modalities, "scores": other_scores} if modalities else None
    notes = [SPICE_NOTE, *_other_note(other)]
    if missing:
        notes.append(
            f"no items for {missing}: mean over the {len(per_modality)} modalities present "
            "(BiRD's script would stop with an error)"
        )
    return {
        "task": task,
        "metric": "caption",
        "per_modality": per_modality,
        "mean": mean,
        "counts": {m: sum(r.bird_modality == m for r in rows) for m in BIRD_MODALITIES},
        "other": other,
        "not_computed": not_computed,
        "notes": notes,
        "skipped": [],
    }


def evaluate_bird(rows: list[PredRow]) -> dict[str, dict]:
    """Run BiRD's protocol for every task present in ``rows``: {task: result}, each task by its
    ``bird`` scorer in :data:`medground.tasks.TASKS`."""
    return {
        task: fn([r for r in rows if r.task == task], task=task)
        for task, fn in scorers("bird", {r.task for r in rows})
    }
