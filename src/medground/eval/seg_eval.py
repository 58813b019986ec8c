"""Segmentation evaluation over files: pair predictions with ground truth, score, summarise.

Mask files are read by :func:`medground.io.read_mask_file` (the one mask reader): ``.png``/``.bmp``/
``.tif``/``.jpg`` (2D, label values as stored, alpha ignored; non-zero = foreground unless ``labels``
are given), ``.nii``/``.nii.gz`` and ``.npy``. Frames: a 2D NIfTI is compared in its display frame
(the radiological slice ``medground build`` and ``segment`` write as PNG), so it pairs with a PNG of
the same slice; 3D NIfTI are canonical RAS+ and a 3D pair must share shape and affine (within 1e-3
mm), else the case is an error naming both files. Spacing comes from the NIfTI header (in array-axis
order of that frame). Pairing by folder: every ground-truth file is a case, matched to the prediction
with the same name up to its suffix (``case1.nii.gz`` <-> ``case1.png`` do match); a ground-truth case
without a prediction is a failure (Dice = IoU = NSD = 0, HD95 by the EmptyRule, even when the truth
is empty) and is listed under ``missing``; predictions without ground truth are listed under
``unmatched``. Pairing by CSV: columns ``pred``, ``gt`` and optional ``spacing`` (``0.8x0.8x2.5``)
and ``group``; relative paths are from the CSV's folder.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from medground.eval.metrics import MetricSpec, declares
from medground.eval.seg_metrics import EmptyRule, failure_scores, score_masks
from medground.io import MASK_FILE_SUFFIXES, MaskFile, read_mask_file

__all__ = ["MASK_SUFFIXES", "MaskPair", "evaluate_pairs", "pairs_from_csv", "pairs_from_dirs", "read_pair"]

MASK_SUFFIXES: tuple[str, ...] = MASK_FILE_SUFFIXES
"""Suffixes of the files a folder pairing picks up (those :func:`medground.io.read_mask_file` reads)."""
_AFFINE_ATOL = 1e-3
_DECLARED = (
    MetricSpec("dice", "headline"),
    MetricSpec("iou"),
    MetricSpec("hd95", direction="lower"),  # in mm, or voxels without spacing
    MetricSpec("nsd"),
)
_METRICS = tuple(m.name for m in _DECLARED)


@dataclass(frozen=True)
class MaskPair:
    """One case: prediction path (None when missing), truth path, optional spacing (mm per axis), group."""

    case: str
    pred: Path | None
    truth: Path
    spacing: tuple[float, ...] | None = None
    group: str = "all"


def _case_name(path: Path) -> str | None:
    name = path.name
    for suffix in MASK_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def pairs_from_dirs(pred_dir: Path, truth_dir: Path) -> tuple[list[MaskPair], list[str]]:
    """Cases of ``truth_dir`` paired with ``pred_dir`` by name; returns (pairs, unmatched predictions)."""
    for folder in (pred_dir, truth_dir):
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"mask folder {folder} does not exist")
    preds = {_case_name(p): p for p in sorted(Path(pred_dir).iterdir()) if _case_name(p)}
    truths = {_case_name(p): p for p in sorted(Path(truth_dir).iterdir()) if _case_name(p)}
    if not truths:
        raise ValueError(f"no mask files ({', '.join(MASK_SUFFIXES)}) in ground-truth folder {truth_dir}")
    pairs = [MaskPair(str(case), preds.get(case), path) for case, path in truths.items()]
    return pairs, sorted(str(c) for c in preds if c not in truths)


def _spacing(text: str, where: str) -> tuple[float, ...] | None:
    if not text.strip():
        return None
    try:
        return tuple(float(v) for v in text.replace(";", "x").split("x"))
    except ValueError:
        raise ValueError(f"{where}: spacing {text!r} is not like '0.8x0.8x2.5'") from None


def pairs_from_csv(path: Path) -> list[MaskPair]:
    """Pairs listed in a CSV with columns pred, gt[, spacing][, group]."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"pred", "gt"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: needs columns 'pred' and 'gt', found {reader.fieldnames}")
        pairs = []
        for number, row in enumerate(reader, start=2):
            truth = path.parent / row["gt"]
            pred = path.parent / row["pred"] if row["pred"].strip() else None
            pairs.append(
                MaskPair(
                    _case_name(truth) or truth.name,
                    pred if pred and pred.exists() else None,
                    truth,
                    _spacing(row.get("spacing") or "", f"{path}:{number}"),
                    (row.get("group") or "all").strip() or "all",
                )
            )
    return pairs


def _describe(mask: MaskFile) -> str:
    return f"{mask.path} ({mask.array.ndim}D, {mask.frame} frame, shape {mask.array.shape})"


def read_pair(pair: MaskPair) -> tuple[MaskFile, np.ndarray]:
    """Read a case's truth and prediction in one frame -> (truth, prediction labels of the truth's shape).

    A missing prediction gives zeros. Raises ValueError naming the case and both files when the two
    are not comparable: 2D against 3D, different shapes, a 3D NIfTI against a 3D ``.npy`` (no affine to
    put it in the NIfTI's frame), or 3D NIfTI whose affines differ by more than 1e-3 mm.
    """
    truth = read_mask_file(pair.truth)
    if pair.pred is None:
        return truth, np.zeros_like(truth.array)
    pred = read_mask_file(pair.pred)
    where = f"case {pair.case}: prediction {_describe(pred)} vs truth {_describe(truth)}"
    if pred.array.ndim != truth.array.ndim or pred.array.shape != truth.array.shape:
        raise ValueError(f"{where}: the masks differ in shape; resample the prediction onto the truth's grid")
    if truth.array.ndim == 3 and (pred.affine is None) != (truth.affine is None):
        raise ValueError(
            f"{where}: a 3D .npy has no affine, so its voxel order cannot be matched to the NIfTI's; "
            "save the prediction as NIfTI with the truth's affine"
        )
    both = pred.affine is not None and truth.affine is not None
    if both and not np.allclose(pred.affine, truth.affine, rtol=0.0, atol=_AFFINE_ATOL):
        with np.printoptions(precision=4, suppress=True):
            raise ValueError(
                f"{where}: the NIfTI affines differ (prediction\n{pred.affine}\nvs truth\n"
                f"{truth.affine}); the masks are not on one voxel grid"
            )
    return truth, pred.array


def _score_case(
    pair: MaskPair,
    spacing: tuple[float, ...] | None,
    tolerance_mm: float,
    rule: EmptyRule,
    labels: list[int] | None,
) -> list[dict]:
    truth, pred = read_pair(pair)
    used = spacing or pair.spacing or truth.spacing
    rows = []
    for label in labels or [None]:
        p, t = (pred > 0, truth.array > 0) if label is None else (pred == label, truth.array == label)
        try:
            if pair.pred is None:  # a missing prediction is a failure, even where the truth is empty
                scores = failure_scores(t, tuple(used) if used else (1.0,) * t.ndim, rule)
            else:
                scores = score_masks(p, t, used, tolerance_mm, rule)
        except ValueError as error:
            raise ValueError(f"case {pair.case} ({pair.pred} vs {pair.truth}): {error}") from None
        rows.append(
            {
                "case": pair.case,
                "group": pair.group,
                "label": label,
                "missing": pair.pred is None,
                "spacing": list(used) if used else None,
                **asdict(scores),
            }
        )
    return rows


def _summary(rows: list[dict]) -> dict:
    out = {}
    for metric in _METRICS:
        values = np.asarray([r[metric] for r in rows], dtype=float)
        finite = values[~np.isnan(values)]
        out[metric] = {
            "mean": float(finite.mean()) if finite.size else None,
            "median": float(np.median(finite)) if finite.size else None,
            "std": float(finite.std()) if finite.size else None,
            "n": int(finite.size),
            "n_undefined": int(np.isnan(values).sum()),
        }
    return out


@declares(*_DECLARED)
def evaluate_pairs(
    pairs: list[MaskPair],
    spacing: tuple[float, ...] | None = None,
    tolerance_mm: float = 1.0,
    rule: EmptyRule | None = None,
    labels: list[int] | None = None,
) -> dict:
    """Score every pair; returns per-case rows, overall / per-group / per-label summaries and the rules used.

    spacing: mm per array axis for every case (overrides CSV and file headers); else the CSV's, else
    the NIfTI header's, else voxel units. labels: score each label value separately (default: > 0).
    """
    rule = rule or EmptyRule()
    cases = [row for pair in pairs for row in _score_case(pair, spacing, tolerance_mm, rule, labels)]
    by = {"group": sorted({r["group"] for r in cases}), "label": sorted({str(r["label"]) for r in cases})}
    return {
        "cases": cases,
        "summary": _summary(cases),
        "per_group": {g: _summary([r for r in cases if r["group"] == g]) for g in by["group"]},
        "per_label": {lb: _summary([r for r in cases if str(r["label"]) == lb]) for lb in by["label"]},
        "missing": sorted({r["case"] for r in cases if r["missing"]}),
        "rules": {
            "empty": rule.describe(),
            "tolerance_mm": tolerance_mm,
            "units": "mm" if any(r["spacing"] for r in cases) else "voxels",
            "surface": "border voxels (face-connected erosion), Euclidean distance transform",
        },
    }
