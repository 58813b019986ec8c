"""Training (outputs, deterministic resume) and evaluation (metrics by hand, report files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from icl_helpers import FakeTextEncoder
from safetensors.torch import load_file

from medground.icl.episodes import EpisodeConfig
from medground.icl.evaluate import EvalConfig, draw_plan, evaluate, parse_fold, qualifies, score, summarise
from medground.icl.targets import SegTarget, load_targets
from medground.icl.train import TrainConfig, train


def _cfg(
    out: Path, data: Path, steps: int, arch: str = "ridgeseg", held: list[str] | None = None
) -> TrainConfig:
    return TrainConfig(
        data=[str(data)],
        out=str(out),
        held_out=held or [],
        architecture=arch,
        size=32,
        widths=[4, 8],
        steps=steps,
        checkpoint_every=2,
        episodes=EpisodeConfig(episodes=2, queries=1, max_k=2),
    )


def test_training_writes_a_self_describing_folder(engine_dir: Path, tmp_path: Path) -> None:
    out = train(_cfg(tmp_path / "m", engine_dir, 3), text_encoder=FakeTextEncoder(), progress=False)
    for name in (
        "config.json",
        "model.safetensors",
        "meta.json",
        "losses.json",
        "loss.png",
        "checkpoint/state.json",
    ):
        assert (out / name).is_file(), name
    meta = json.loads((out / "meta.json").read_text())
    assert meta["train_config"]["steps"] == 3 and len(meta["data_sha256"]) == 64
    assert [s for s, _ in json.loads((out / "losses.json").read_text())] == [0, 1, 2]


@pytest.mark.parametrize("arch", ["ridgeseg", "poolseg", "universeg"])
def test_resumed_run_equals_uninterrupted_run(engine_dir: Path, tmp_path: Path, arch: str) -> None:
    enc = FakeTextEncoder()
    straight = train(_cfg(tmp_path / "a", engine_dir, 4, arch), text_encoder=enc, progress=False)
    train(_cfg(tmp_path / "b", engine_dir, 4, arch), text_encoder=enc, progress=False, stop_at=2)
    assert json.loads((tmp_path / "b/checkpoint/state.json").read_text())["step"] == 2
    resumed = train(_cfg(tmp_path / "b", engine_dir, 4, arch), text_encoder=enc, progress=False)
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy(), err_msg=key)


def test_dice_and_hd95_by_hand() -> None:
    def dice(p, g):
        return score(p, g).dice

    def hd95(p, g):
        return score(p, g).hd95

    gt = np.zeros((10, 10), bool)
    gt[2:4, 2:4] = True  # 4 pixels
    pred = np.zeros((10, 10), bool)
    pred[2:4, 2:6] = True  # 8 pixels, 4 shared
    assert dice(pred, gt) == pytest.approx(2 * 4 / 12)
    assert (
        dice(np.zeros_like(gt), np.zeros_like(gt)) == 1.0
        and hd95(np.zeros_like(gt), np.zeros_like(gt)) == 0.0
    )
    assert dice(pred, np.zeros_like(gt)) == 0.0 and hd95(pred, np.zeros_like(gt)) == pytest.approx(
        np.hypot(10, 10)
    )
    a = np.zeros((20, 20), bool)
    a[5, 5] = True
    b = np.zeros((20, 20), bool)
    b[5, 8] = True
    assert hd95(a, b) == pytest.approx(3.0)  # single pixels 3 apart
    assert hd95(gt, gt) == 0.0


def test_parse_fold(tmp_path: Path) -> None:
    assert parse_fold("a,b:/x/y") == (["a", "b"], Path("/x/y"))
    assert parse_fold(str(tmp_path)) == (None, tmp_path)
    with pytest.raises(ValueError, match="HELD:FOLDER"):
        parse_fold("no/such/folder")


def _task(cases: list[str | None]) -> SegTarget:
    n = len(cases)
    return SegTarget(
        "src",
        "organ",
        "organ",
        torch.zeros(n, 3, 8, 8),
        torch.ones(n, 1, 8, 8),
        [f"i{j}" for j in range(n)],
        cases,
    )


def test_supports_never_come_from_the_query_patient() -> None:
    task = _task(["a", "a", "a", "b", "b", "c", "d"])
    plan = draw_plan(task, draws=6, queries=2, seed=0)
    for qry, order, patient in plan:
        assert {task.cases[q] for q in qry} == {patient} and 1 <= len(qry) <= 2
        assert all(task.cases[s] != patient for s in order)
        assert sorted(order + [i for i, c in enumerate(task.cases) if c == patient]) == list(range(7))
    assert {p for _, _, p in plan[:4]} == {"a", "b", "c", "d"}  # query patients cycle
    assert draw_plan(task, 6, 2, 0) == plan  # seeded: the same at every k and for every method
    # the largest patient has 3 of 7 images, so 4 supports are always available, 5 are not
    assert qualifies(task, 4)[0] and not qualifies(task, 5)[0]
    assert "only 4 outside the largest patient" in qualifies(task, 5)[1]
    unknown = _task([None] * 3)
    assert not unknown.patients_known and qualifies(unknown, 2)[0] and not qualifies(unknown, 3)[0]


def test_summary_is_a_mean_over_tasks_with_a_patient_bootstrap() -> None:
    rows = [
        {"method": "m", "k": 1, "task": "t1", "patient": "p1", "dice": 0.2, "hd95": 1.0},
        {"method": "m", "k": 1, "task": "t1", "patient": "p1", "dice": 0.4, "hd95": 1.0},
        {"method": "m", "k": 1, "task": "t1", "patient": "p2", "dice": 0.9, "hd95": 3.0},
        {"method": "m", "k": 1, "task": "t2", "patient": "q1", "dice": 0.5, "hd95": 2.0},
    ]
    s = summarise(rows, n_boot=500, seed=0)["m"][1]
    # task t1: rows 0.2, 0.4, 0.9 -> 0.5; task t2: 0.5; mean over tasks 0.5
    assert s["dice"] == pytest.approx(0.5) and s["tasks"] == 2 and s["patients"] == 3
    assert s["hd95"] == pytest.approx((5 / 3 + 2) / 2)
    # resampling t1's two patients gives t1 = 0.3 (p1 twice), 0.5 or 0.9 (p2 twice): overall 0.4 .. 0.7
    assert s["lo"] == pytest.approx(0.4) and s["hi"] == pytest.approx(0.7)


def test_predictions_are_scored_at_the_query_resolution() -> None:
    from medground.icl.evaluate import _at_query_size

    prob = torch.full((32, 32), 0.1)
    prob[:, :16] = 0.9  # left half of the working grid; symmetric logits put the edge half-way
    mask = _at_query_size(prob, 40, 100)
    expected = np.zeros((40, 100), bool)
    expected[:, :50] = True
    assert mask.shape == (40, 100) and np.array_equal(mask, expected)


def _evaluate(data: Path, out: Path, model: Path, ks: list[int], unet_steps: int, text_encoder) -> Path:
    """icl-eval of one model folder on the demo build: 2 draws x 1 query, a short bootstrap."""
    cfg = EvalConfig(
        data=[str(data)],
        out=str(out),
        ks=ks,
        models=[str(model)],
        draws=2,
        queries=1,
        unet_steps=unet_steps,
        bootstrap=20,
    )
    return evaluate(cfg, text_encoder=text_encoder)


def test_evaluation_writes_report_with_all_methods(engine_dir: Path, tmp_path: Path) -> None:
    enc = FakeTextEncoder()
    ours = train(_cfg(tmp_path / "p", engine_dir, 2, held=["demo"]), text_encoder=enc, progress=False)
    report = _evaluate(engine_dir, tmp_path / "r", ours, [0, 1, 2], unet_steps=2, text_encoder=enc)
    payload = json.loads((report / "summary.json").read_text())
    summary = payload["summaries"]["held-out, patients known"]
    assert set(summary) == {"ridgeseg", "ridgeseg+text", "prior", "unet"}
    assert set(summary["ridgeseg+text"]) == {"0", "1", "2"} and set(summary["prior"]) == {"1", "2"}
    # liver has 2 images (2 patients): only 1 support from another patient, so it cannot reach k = 2 and
    # is listed, not scored; hip_left (3 patients) is scored at every k
    assert summary["prior"]["2"]["tasks"] == 1 and summary["prior"]["1"]["tasks"] == 1
    assert [e["task"] for e in payload["excluded_tasks"]] == ["demo/liver"]
    rows = [json.loads(line) for line in (report / "results.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["dice"] <= 1.0 for r in rows) and {r["task"] for r in rows} == {"demo/hip_left"}
    text = (report / "report.md").read_text()
    assert "demo/liver" in text and "Sanity check" in text
    assert (report / "dice_vs_k.png").is_file()
    assert len(load_targets([engine_dir], 32).tasks) == 2


def test_a_trained_universeg_is_scored_as_a_baseline_on_the_same_queries(
    engine_dir: Path, tmp_path: Path
) -> None:
    """Baseline (c): a UniverSeg folder given to icl-eval is scored without text (it takes none), on the
    same draws and queries as the support prior; the facade's loader still refuses it."""
    from medground.icl.segmenter import load_pretrained

    enc = FakeTextEncoder()
    folder = train(
        _cfg(tmp_path / "u", engine_dir, 2, "universeg", held=["demo"]), text_encoder=enc, progress=False
    )
    report = _evaluate(engine_dir, tmp_path / "r", folder, [1, 2], unet_steps=0, text_encoder=enc)
    rows = [json.loads(line) for line in (report / "results.jsonl").read_text().splitlines()]
    assert {r["method"] for r in rows} == {"universeg", "prior"}
    keys = {
        m: sorted((r["task"], r["k"], r["draw"], r["query"]) for r in rows if r["method"] == m)
        for m in ("universeg", "prior")
    }
    assert keys["universeg"] == keys["prior"] and {k for _, k, _, _ in keys["prior"]} == {1, 2}
    with pytest.raises(ValueError, match="not an in-context model"):
        load_pretrained(folder)
    with pytest.raises(ValueError, match="UniverSeg takes no text, so it cannot be scored at k = 0"):
        _evaluate(engine_dir, tmp_path / "r0", folder, [0, 1], unet_steps=0, text_encoder=enc)


def test_unknown_held_out_name_is_an_error_naming_the_known(engine_dir: Path, tmp_path: Path) -> None:
    ours = train(
        _cfg(tmp_path / "p", engine_dir, 1, held=["demo"]), text_encoder=FakeTextEncoder(), progress=False
    )
    cfg = EvalConfig(
        data=[str(engine_dir)], out=str(tmp_path / "r"), ks=[1], models=[f"dmeo:{ours}"], unet_steps=0
    )
    with pytest.raises(ValueError, match=r"\['dmeo'\] match no loaded dataset; known sources: \['demo'\]"):
        evaluate(cfg, text_encoder=FakeTextEncoder())
