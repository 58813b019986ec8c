"""End to end: files in, report files out, the typer command, segmentation folders and CSV pairs."""

import json

import nibabel as nib
import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from medground.eval.api import evaluate_predictions, evaluate_segmentation
from medground.eval.command import eval_command

EPS = 1e-8


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _vg_rows():
    return [
        {
            "id": "1",
            "image": "ct_1.png",
            "question": "Where is the liver?",
            "annotation": "<ref>liver</ref><box>(100,100),(200,200)</box>",
            "response": "<ref>liver</ref><box>(100,100),(200,200)</box><|endoftext|>",
        },
        {
            "id": "2",
            "image": "mr_2.png",
            "question": "Where is the kidney?",
            "annotation": "<ref>kidney</ref><box>(0,0),(100,100)</box>",
            "response": "(0,0),(100,40)",
        },
    ]


def test_bird_vg_report_files(tmp_path):
    path = _write_jsonl(tmp_path / "test_VG_pred.jsonl", _vg_rows())
    result = evaluate_predictions(path, protocol="bird", out=tmp_path / "report")
    # results are keyed by the task's one name; BiRD's name (from the _VG_ file tag) labels its tables
    assert result["tasks"]["rec"]["mean"] == pytest.approx((1 / (1 + EPS)) / 8)
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["tasks"]["rec"]["per_modality"]["ct"] == pytest.approx(1 / (1 + EPS))
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## bird / vg (rec)" in markdown
    assert "| ct | 1.000000 | 1 | 1 |" in markdown and "0.125000" in markdown
    assert (tmp_path / "report" / "bird_rec_per_modality.png").stat().st_size > 0
    assert (tmp_path / "report" / "bird_per_task.png").exists()


def test_strict_report_json_is_strict_json(tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", _vg_rows())
    result = evaluate_predictions(path, task="vg", protocol="strict", out=tmp_path / "r")  # BiRD's name works
    assert result["tasks"]["rec"]["micro"]["recall@0.5"] == pytest.approx(1 / 2)
    text = (tmp_path / "r" / "report.json").read_text()
    assert "NaN" not in text
    json.loads(text)


def test_strict_reports_say_what_the_bootstrap_resampled(tmp_path):
    # two records (images) of one patient plus one of another, 2 ROC turns each: 3 images, 2 patients
    rows = []
    for rec, case in (("a", "p1"), ("b", "p1"), ("c", "p2")):
        for turn in range(2):
            rows.append(
                {
                    "id": f"{rec}/{turn}",
                    "image": f"images/{rec}.png",
                    "modality": "ct",
                    "task": "roc",
                    "annotation": "liver",
                    "response": "liver",
                    "case": case,
                }
            )
    path = _write_jsonl(tmp_path / "p.jsonl", rows)
    result = evaluate_predictions(path, protocol="strict", out=tmp_path / "r")
    said = "95% CI: percentile bootstrap, 1000 replicates, resampling 2 patients (6 items"
    assert result["tasks"]["roc"]["bootstrap"]["unit"] == "patient"
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    assert saved["tasks"]["roc"]["bootstrap"] == {
        "unit": "patient",
        "units": 2,
        "items": 6,
        "replicates": 1000,
        "level": 0.95,
    }
    assert said in (tmp_path / "r" / "report.md").read_text()
    for row in rows:
        row["case"] = None
    _write_jsonl(path, rows)
    app = typer.Typer()
    app.command()(eval_command)
    out = CliRunner().invoke(app, [str(path), "--protocol", "strict"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "resampling 3 images (6 items" in " ".join(out.output.split())


def test_command_prints_table(tmp_path):
    path = _write_jsonl(
        tmp_path / "p_RO_.jsonl",
        [
            {
                "id": "1",
                "image": "ct_1.png",
                "question": "<box>(1,1),(5,5)</box>",
                "annotation": "liver",
                "response": "Liver",
            }
        ],
    )
    app = typer.Typer()
    app.command()(eval_command)
    out = CliRunner().invoke(app, [str(path), "--protocol", "bird"])
    assert out.exit_code == 0, out.output
    assert "accuracy" in out.output and "0.125000" in out.output


def _png(path, array):
    Image.fromarray((array > 0).astype(np.uint8) * 255).save(path)


def test_segmentation_folders_missing_and_unmatched(tmp_path):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    truth = np.zeros((8, 8), np.uint8)
    truth[2:6, 2:6] = 1
    pred = np.zeros((8, 8), np.uint8)
    pred[2:6, 2:4] = 1
    _png(gt_dir / "a.png", truth)
    _png(pred_dir / "a.png", pred)
    _png(gt_dir / "b.png", truth)  # no prediction: a failure
    _png(gt_dir / "d.png", np.zeros((8, 8)))  # no prediction and empty truth: still a failure
    _png(pred_dir / "c.png", pred)  # no ground truth
    result = evaluate_segmentation(pred_dir, gt_dir, out=tmp_path / "out")
    dices = {c["case"]: c["dice"] for c in result["cases"]}
    assert dices == pytest.approx({"a": 2 * 8 / (16 + 8), "b": 0.0, "d": 0.0})
    assert result["missing"] == ["b", "d"] and result["unmatched"] == ["c"]
    assert result["summary"]["dice"]["mean"] == pytest.approx((2 * 8 / 24) / 3)
    assert result["summary"]["hd95"]["n_undefined"] == 2
    assert (tmp_path / "out" / "segmentation_per_case.png").exists()


def test_segmentation_nifti_spacing_and_csv_groups(tmp_path):
    medpy_binary = pytest.importorskip("medpy.metric.binary")
    rng = np.random.default_rng(0)
    truth = (rng.random((10, 12, 6)) > 0.7).astype(np.uint8)
    pred = (rng.random((10, 12, 6)) > 0.7).astype(np.uint8)
    zooms = (0.8, 0.9, 2.5)
    for name, data in (("t.nii.gz", truth), ("p.nii.gz", pred)):
        img = nib.Nifti1Image(data, np.diag([*zooms, 1.0]))
        nib.save(img, tmp_path / name)
    (tmp_path / "pairs.csv").write_text("pred,gt,group\np.nii.gz,t.nii.gz,liver\n", encoding="utf-8")
    result = evaluate_segmentation(pairs_csv=tmp_path / "pairs.csv", tolerance_mm=2.0)
    case = result["cases"][0]
    assert case["spacing"] == pytest.approx(list(zooms))
    assert case["hd95"] == pytest.approx(medpy_binary.hd95(pred, truth, voxelspacing=zooms))
    assert list(result["per_group"]) == ["liver"] and result["rules"]["units"] == "mm"


def test_segmentation_needs_inputs():
    with pytest.raises(ValueError, match="--pairs"):
        evaluate_segmentation()


def test_without_java_reports_skips_and_no_numbers(tmp_path, monkeypatch):
    from medground.eval import text_metrics

    monkeypatch.setattr(text_metrics.shutil, "which", lambda name: None)
    row = {
        "id": "1",
        "image": "ct_1.png",
        "question": "Describe <box>(1,1),(5,5)</box>",
        "annotation": "A cyst in the kidney.",
        "response": "A cyst in the kidney.",
    }
    path = _write_jsonl(tmp_path / "p.jsonl", [row])
    bird = evaluate_predictions(path, task="reg", protocol="bird", out=tmp_path / "b")
    assert bird["tasks"]["reg"]["mean"] == {} and bird["tasks"]["reg"]["per_modality"]["ct"] == {}
    assert "Java not found" in bird["tasks"]["reg"]["not_computed"]["METEOR"]
    assert "Java not found" in (tmp_path / "b" / "report.md").read_text()
    strict = evaluate_predictions(path, task="rc", protocol="strict", bootstrap=None)
    variants = strict["tasks"]["reg"]["variants"]
    assert "Java not found" in variants["java"]["not_computed"]
    assert variants["no_java"]["micro"]["Bleu_1"] == pytest.approx(1.0, abs=1e-6)
    assert "METEOR" not in variants["no_java"]["micro"]


def test_command_segmentation(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    mask = np.zeros((6, 6), np.uint8)
    mask[1:4, 1:4] = 1
    _png(tmp_path / "p" / "a.png", mask)
    _png(tmp_path / "g" / "a.png", mask)
    app = typer.Typer()
    app.command()(eval_command)
    args = ["--seg", str(tmp_path / "p"), "--gt", str(tmp_path / "g"), "--spacing", "0.5x0.5"]
    out = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o")])
    assert out.exit_code == 0, out.output
    assert "1.0000" in out.output
    saved = json.loads((tmp_path / "o" / "report.json").read_text())
    assert saved["cases"][0]["spacing"] == [0.5, 0.5] and saved["summary"]["hd95"]["mean"] == 0.0
    bad = CliRunner().invoke(app, [*args, "--empty-both", "one"])
    assert bad.exit_code != 0
