"""Segmentation metrics against medpy, a brute-force NSD and hand-computed tiny cases."""

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from medground.eval.seg_metrics import EmptyRule, dice, hd95, iou, nsd, score_masks

medpy_binary = pytest.importorskip("medpy.metric.binary")


def blob(shape, seed, threshold=0.55):
    """A random smooth blob mask of the given shape."""
    noise = np.random.default_rng(seed).random(shape)
    return ndimage.gaussian_filter(noise, sigma=2) > np.quantile(
        ndimage.gaussian_filter(noise, sigma=2), threshold
    )


def border_points(mask, spacing):
    """Border voxels by face-neighbour test on a zero-padded copy (independent of erosion), in mm."""
    padded = np.pad(mask, 1)
    inner = np.ones_like(mask, dtype=bool)
    for axis in range(mask.ndim):
        for shift in (-1, 1):
            inner &= np.roll(padded, shift, axis=axis)[tuple(slice(1, -1) for _ in range(mask.ndim))]
    return np.argwhere(mask & ~inner) * np.asarray(spacing)


def brute_nsd(a, b, tol, spacing):
    pa, pb = border_points(a, spacing), border_points(b, spacing)
    d = cdist(pa, pb)
    return ((d.min(axis=1) <= tol).sum() + (d.min(axis=0) <= tol).sum()) / (len(pa) + len(pb))


@pytest.mark.parametrize(("shape", "spacing"), [((40, 50), (0.7, 1.3)), ((12, 20, 18), (2.5, 0.8, 0.9))])
def test_against_medpy(shape, spacing):
    pred, truth = blob(shape, 1), blob(shape, 2)
    assert dice(pred, truth) == pytest.approx(medpy_binary.dc(pred, truth))
    assert iou(pred, truth) == pytest.approx(medpy_binary.jc(pred, truth))
    assert hd95(pred, truth, spacing) == pytest.approx(medpy_binary.hd95(pred, truth, voxelspacing=spacing))
    for tol in (0.5, 1.0, 2.0):
        assert nsd(pred, truth, tol, spacing) == pytest.approx(brute_nsd(pred, truth, tol, spacing))


def test_tiny_hand_cases():
    truth = np.zeros((5, 6), bool)
    truth[0:3, 0:3] = True
    pred = np.zeros((5, 6), bool)
    pred[0:3, 1:4] = True
    assert dice(pred, truth) == pytest.approx(2 * 6 / 18)
    assert iou(pred, truth) == pytest.approx(6 / 12)
    a = np.zeros((1, 4), bool)
    b = np.zeros((1, 4), bool)
    a[0, 0], b[0, 3] = True, True
    # single voxels 3 columns apart, column spacing 2 mm -> 6 mm both ways
    assert hd95(a, b, (1.0, 2.0)) == pytest.approx(6.0)
    assert nsd(a, b, 5.9, (1.0, 2.0)) == 0.0
    assert nsd(a, b, 6.0, (1.0, 2.0)) == 1.0


def test_empty_rules():
    empty, full = np.zeros((3, 4), bool), np.zeros((3, 4), bool)
    full[1, 1] = True
    both = score_masks(empty, empty)
    assert (both.dice, both.iou, both.hd95, both.nsd) == (1.0, 1.0, 0.0, 1.0)
    both_nan = score_masks(empty, empty, rule=EmptyRule(both_empty="nan"))
    assert all(math.isnan(v) for v in (both_nan.dice, both_nan.iou, both_nan.hd95, both_nan.nsd))
    for pred, truth in ((empty, full), (full, empty)):
        one = score_masks(pred, truth)
        assert (one.dice, one.iou, one.nsd) == (0.0, 0.0, 0.0) and math.isnan(one.hd95)
        assert score_masks(
            pred, truth, (2.0, 1.0), rule=EmptyRule(one_empty_hd="diagonal")
        ).hd95 == pytest.approx(math.hypot(3 * 2.0, 4 * 1.0))
        assert score_masks(pred, truth, rule=EmptyRule(one_empty_hd="inf")).hd95 == math.inf


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        score_masks(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="spacing"):
        score_masks(np.ones((3, 3)), np.ones((3, 3)), spacing=(1.0,))
    with pytest.raises(ValueError, match="both_empty"):
        EmptyRule(both_empty="one")


SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
BRATS = SHARED / "medvol" / "brats2015_deepmedic_mr" / "labels" / "brats_2013_pat0006_1_OTMultiClass.nii.gz"


def test_real_label_volume_per_label_against_medpy(tmp_path):
    """A real BraTS label volume vs itself shifted by 2 voxels, each label, anisotropic spacing."""
    if not BRATS.exists():
        pytest.skip(f"shared data not found at {BRATS}")
    import nibabel as nib

    from medground.eval.seg_eval import MaskPair, evaluate_pairs

    labels = np.rint(np.asarray(nib.load(BRATS).dataobj)).astype(np.int16)
    box = tuple(slice(int(i.min()) - 3, int(i.max()) + 4) for i in np.nonzero(labels))
    truth = labels[box]
    pred = np.roll(truth, 2, axis=0)
    zooms = (0.8, 0.9, 2.5)
    for name, data in (("t.nii.gz", truth), ("p.nii.gz", pred)):
        nib.save(nib.Nifti1Image(data, np.diag([*zooms, 1.0])), tmp_path / name)
    result = evaluate_pairs([MaskPair("c", tmp_path / "p.nii.gz", tmp_path / "t.nii.gz")], labels=[1, 3])
    for case in result["cases"]:
        p, t = pred == case["label"], truth == case["label"]
        assert case["dice"] == pytest.approx(medpy_binary.dc(p, t))
        assert case["hd95"] == pytest.approx(medpy_binary.hd95(p, t, voxelspacing=zooms))
