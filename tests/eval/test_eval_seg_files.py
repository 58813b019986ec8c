"""Segmentation evaluation reads masks as the rest of medground does: alpha ignored, frames matched.

Expected scores are counted by hand from the pictures drawn here, never by the code under test.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medground.eval.api import evaluate_segmentation
from medground.eval.seg_eval import MaskPair, evaluate_pairs

# The picture as a viewer shows it: 4 x 4, row 0 at the top; 4 foreground pixels in an "L" on its side.
DISPLAY = np.array(
    [
        [1, 1, 1, 0],
        [1, 0, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ],
    np.uint8,
)


def _png(path, array):
    Image.fromarray(array.astype(np.uint8) * 255).save(path)
    return path


def _dice(pairs, **kwargs):
    return [c["dice"] for c in evaluate_pairs(pairs, **kwargs)["cases"]]


def test_rgba_and_la_masks_ignore_alpha(tmp_path):
    truth = np.zeros((10, 10), np.uint8)
    truth[2:6, 2:6] = 1  # 16 pixels
    _png(tmp_path / "t.png", truth)
    pred = np.zeros((10, 10), np.uint8)
    pred[2:6, 2:4] = 255  # 8 pixels, all inside the truth
    opaque = np.full((10, 10), 255, np.uint8)  # alpha 255 everywhere: the old reader saw 100% foreground
    rgba = np.dstack([pred, pred, pred, opaque])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "p_rgba.png")
    Image.fromarray(np.dstack([pred, opaque]), mode="LA").save(tmp_path / "p_la.png")
    pairs = [MaskPair(k, tmp_path / f"p_{k}.png", tmp_path / "t.png") for k in ("rgba", "la")]
    # Dice = 2 * 8 / (8 + 16) by hand; reading alpha as foreground would give 2 * 16 / (100 + 16)
    assert _dice(pairs) == pytest.approx([2 * 8 / 24, 2 * 8 / 24])


def _voxels_from_display(display: np.ndarray, flip_xy: bool) -> np.ndarray:
    """The stored (X, Y) voxels of a 2D NIfTI whose radiological display slice is ``display``.

    Radiological axial display (image right = patient left, image top = anterior) of a RAS+ array:
    D[r, c] = a[X-1-c, Y-1-r]. With an LPS affine (diag(-1, -1, 1), as DICOM-derived files often
    have) the stored axes run the other way, so the file holds b[i, j] = a[X-1-i, Y-1-j], i.e.
    D[r, c] = b[c, r]. Written out with loops, independently of medground.io.display.
    """
    rows, cols = display.shape
    stored = np.zeros((cols, rows), display.dtype)
    for r in range(rows):
        for c in range(cols):
            if flip_xy:
                stored[c, r] = display[r, c]
            else:
                stored[cols - 1 - c, rows - 1 - r] = display[r, c]
    return stored


@pytest.mark.parametrize("orientation", ["ras", "lps"])
def test_2d_nifti_is_compared_with_png_in_display_frame(tmp_path, orientation):
    flip = orientation == "lps"
    voxels = _voxels_from_display(DISPLAY, flip_xy=flip)
    affine = np.diag([-0.5, -2.0, 1.0, 1.0]) if flip else np.diag([0.5, 2.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(voxels, affine), tmp_path / "t.nii.gz")
    assert not np.array_equal(voxels, DISPLAY)  # a reader ignoring orientation would compare these
    _png(tmp_path / "same.png", DISPLAY)
    _png(tmp_path / "transposed.png", DISPLAY.T)
    result = evaluate_pairs(
        [
            MaskPair("same", tmp_path / "same.png", tmp_path / "t.nii.gz"),
            MaskPair("transposed", tmp_path / "transposed.png", tmp_path / "t.nii.gz"),
        ]
    )
    same, transposed = result["cases"]
    assert same["dice"] == pytest.approx(1.0)
    # DISPLAY vs its transpose share 3 of 4 pixels ((0,0), (0,1), (1,0)): Dice 2 * 3 / 8
    assert transposed["dice"] == pytest.approx(0.75)
    # spacing in the display frame: rows run along y (2.0 mm), columns along x (0.5 mm)
    assert same["spacing"] == pytest.approx([2.0, 0.5])
    # and the other way round: a PNG truth, a 2D NIfTI prediction
    assert _dice([MaskPair("rev", tmp_path / "t.nii.gz", tmp_path / "same.png")]) == pytest.approx([1.0])


def test_2d_nifti_stored_as_single_slice_volume(tmp_path):
    voxels = _voxels_from_display(DISPLAY, flip_xy=False)[:, :, None]  # (X, Y, 1)
    nib.save(nib.Nifti1Image(voxels, np.eye(4)), tmp_path / "p.nii.gz")
    _png(tmp_path / "t.png", DISPLAY)
    assert _dice([MaskPair("c", tmp_path / "p.nii.gz", tmp_path / "t.png")]) == pytest.approx([1.0])


def _volume(path, array, affine):
    nib.save(nib.Nifti1Image(array.astype(np.uint8), affine), path)
    return path


def test_3d_pairs_must_share_shape_and_affine(tmp_path):
    truth = np.zeros((6, 5, 4), np.uint8)
    truth[1:4, 1:3, 1:3] = 1
    t = _volume(tmp_path / "t.nii.gz", truth, np.diag([1.0, 1.0, 2.0, 1.0]))
    same = _volume(tmp_path / "same.nii.gz", truth, np.diag([1.0, 1.0, 2.0, 1.0]))
    assert _dice([MaskPair("ok", same, t)]) == pytest.approx([1.0])

    shifted = np.diag([1.0, 1.0, 2.0, 1.0])
    shifted[:3, 3] = [0.0, 0.0, 10.0]  # same voxels, 10 mm higher: another place in the patient
    moved = _volume(tmp_path / "moved.nii.gz", truth, shifted)
    with pytest.raises(ValueError, match="case moved.*affines differ"):
        evaluate_pairs([MaskPair("moved", moved, t)])

    small = _volume(tmp_path / "small.nii.gz", truth[:, :, :3], np.diag([1.0, 1.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match=r"case small.*small\.nii\.gz.*differ in shape"):
        evaluate_pairs([MaskPair("small", small, t)])

    np.save(tmp_path / "arr.npy", truth)
    with pytest.raises(ValueError, match="no affine"):
        evaluate_pairs([MaskPair("npy", tmp_path / "arr.npy", t)])


def test_3d_nifti_in_another_voxel_order_is_the_same_mask(tmp_path):
    """An LPS-stored prediction of the RAS-stored truth, same world grid: identical after reorientation."""
    truth = np.zeros((6, 5, 4), np.uint8)
    truth[0:2, 1:4, 0:3] = 1  # off-centre, so a flip changes it
    t = _volume(tmp_path / "t.nii.gz", truth, np.eye(4))
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps[:3, 3] = [
        5.0,
        4.0,
        0.0,
    ]  # voxel (5, 4, 0) of the LPS file is world (0, 0, 0), as voxel (0, 0, 0) of t
    p = _volume(tmp_path / "p.nii.gz", truth[::-1, ::-1, :], lps)
    assert _dice([MaskPair("c", p, t)]) == pytest.approx([1.0])


def test_2d_against_3d_is_an_error(tmp_path):
    _png(tmp_path / "p.png", DISPLAY)
    t = _volume(tmp_path / "t.nii.gz", np.zeros((4, 4, 3)), np.eye(4))
    with pytest.raises(ValueError, match="case c.*2D.*3D"):
        evaluate_pairs([MaskPair("c", tmp_path / "p.png", t)])


def test_label_maps_keep_their_values(tmp_path):
    truth = np.zeros((6, 6), np.uint16)
    truth[0:2, 0:2] = 300  # 16-bit instance ids, as instance maps store them
    truth[3:6, 3:6] = 7
    Image.fromarray(truth).save(tmp_path / "t.png")
    pred = truth.copy()
    pred[0, 0] = 0  # label 300 loses 1 of 4 pixels
    Image.fromarray(pred).save(tmp_path / "p.png")
    dices = _dice([MaskPair("c", tmp_path / "p.png", tmp_path / "t.png")], labels=[300, 7])
    assert dices == pytest.approx([2 * 3 / 7, 1.0])


def test_unreadable_mask_names_the_file(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    _png(tmp_path / "g" / "a.png", DISPLAY)
    (tmp_path / "p" / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"p/a\.png"):
        evaluate_segmentation(tmp_path / "p", tmp_path / "g")
