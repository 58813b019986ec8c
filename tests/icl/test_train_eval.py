"""Training (outputs, deterministic resume) and evaluation (metrics by hand, report files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from icl_helpers import FakeTextEncoder
from safetensors.torch import load_file

from medground.icl.episodes import EpisodeConfig
from medground.icl.evaluate import EvalConfig, evaluate, parse_fold, score
from medground.icl.tasks import load_tasks
from medground.icl.train import TrainConfig, train


def _cfg(out: Path, data: Path, steps: int, arch: str = "ridgeseg") -> TrainConfig:
    return TrainConfig(
        data=[str(data)],
        out=str(out),
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


@pytest.mark.parametrize("arch", ["ridgeseg", "poolseg"])
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


def test_parse_fold() -> None:
    assert parse_fold("a,b:/x/y") == (["a", "b"], Path("/x/y"))
    with pytest.raises(ValueError, match="HELD:FOLDER"):
        parse_fold("nocolon")


def test_evaluation_writes_report_with_all_methods(engine_dir: Path, tmp_path: Path) -> None:
    enc = FakeTextEncoder()
    ours = train(_cfg(tmp_path / "p", engine_dir, 2), text_encoder=enc, progress=False)
    base = tmp_path / "u"
    cfg_u = _cfg(base, engine_dir, 1, arch="universeg")
    train(cfg_u, text_encoder=enc, progress=False)
    # shrink nothing: the UniverSeg paper model on 2 tiny tasks at 32 px is still fast enough
    report = evaluate(
        EvalConfig(
            data=[str(engine_dir)],
            out=str(tmp_path / "r"),
            ks=[0, 1, 2],
            models=[f"demo:{ours}"],
            universeg=[f"demo:{base}"],
            draws=2,
            queries=1,
            unet_steps=2,
        ),
        text_encoder=enc,
    )
    summary = json.loads((report / "summary.json").read_text())["summary"]
    assert set(summary) == {"ridgeseg", "ridgeseg+text", "prior", "unet", "universeg"}
    assert set(summary["ridgeseg+text"]) == {"0", "1", "2"} and set(summary["prior"]) == {"1", "2"}
    # liver has 2 images, so k=2 is evaluated only on hip_left (3 images)
    assert summary["prior"]["2"]["tasks"] == 1 and summary["prior"]["1"]["tasks"] == 2
    rows = [json.loads(line) for line in (report / "results.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["dice"] <= 1.0 for r in rows)
    assert (report / "report.md").is_file() and (report / "dice_vs_k.png").is_file()
    assert len(load_tasks([engine_dir], 32)) == 2
