import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medground.data import engine
from medground.data.api import build_dataset
from medground.data.engine import BuildError
from medground.data.records import RecordConfig
from medground.grounding import DIALECTS, get_dialect
from medground.types import tight_box

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "medground" / "sample" / "medseg"


def _tree(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _records(out: Path) -> list[dict]:
    return [
        json.loads(line)
        for f in sorted((out / "records").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]


def _build(out, sources=None, **kwargs):
    sources = sources or [
        SAMPLE / "sa_med2d_demo_ct",
        SAMPLE / "hc18_fetal_ultrasound",
        SAMPLE / "brats2021_flair_mr",
    ]
    kwargs.setdefault("report", False)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("shard_size", 3)
    return build_dataset(sources, out, kwargs.pop("config", RecordConfig(seed=3)), **kwargs)


@pytest.mark.parametrize("max_side", [None, 120])
def test_every_box_is_the_tight_box_of_its_mask_file(tmp_path, max_side):
    manifest = _build(tmp_path / "out", config=RecordConfig(seed=3, max_side=max_side))
    records = _records(tmp_path / "out")
    assert manifest["counts"]["records"] == len(records) == 4 + 6 + 8
    for record in records:
        if max_side is not None:
            assert max(record["width"], record["height"]) == max_side
        image = Image.open(tmp_path / "out" / record["image"])
        assert image.size == (record["width"], record["height"])
        for region in record["regions"]:
            mask = np.asarray(Image.open(tmp_path / "out" / region["mask"]))
            assert mask.shape == (record["height"], record["width"]) and set(np.unique(mask)) <= {0, 255}
            assert tight_box(mask > 0).as_list() == region["box"]
            assert int((mask > 0).sum()) == region["area"]
        assert record["conversations"][0]["value"].startswith("<image>\n")
        assert len(record["conversations"]) == 2 * len(record["turns"])


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_answers_ground_exactly_the_regions_they_list(tmp_path, dialect):
    _build(tmp_path / "out", config=RecordConfig(seed=3, dialect=dialect))
    parser = get_dialect(dialect)
    grounded = 0
    for record in _records(tmp_path / "out"):
        w, h = record["width"], record["height"]
        assert record["dialect"] == dialect
        for turn, answer in zip(record["turns"], record["conversations"][1::2], strict=True):
            if turn["task"] == "rec" and not turn["negative"]:
                parsed = {tuple(g.box.as_list()) for g in parser.parse(answer["value"], w, h)}
                expected = {
                    tuple(
                        parser.parse(parser.box(_box(record["regions"][i]["box"]), w, h), w, h)[
                            0
                        ].box.as_list()
                    )
                    for i in turn["regions"]
                }
                assert parsed == expected
                grounded += 1
            if turn["negative"]:
                assert parser.parse(answer["value"], w, h) == []
                assert turn["structure"] not in {r["name"] for r in record["regions"]}
    assert grounded > 0


def _box(values):
    from medground.types import Box

    return Box(*values)


def test_splits_follow_cases_never_slices(tmp_path):
    _build(tmp_path / "out", config=RecordConfig(seed=1, split_ratios=(0.5, 0.25, 0.25)))
    by_case: dict[tuple, set] = {}
    for record in _records(tmp_path / "out"):
        by_case.setdefault((record["source"], record["case"]), set()).add(record["split"])
    assert all(len(splits) == 1 for splits in by_case.values())
    brats = [r for r in _records(tmp_path / "out") if r["source"] == "brats2021_flair_mr"]
    assert len({r["case"] for r in brats}) == 1  # 8 slices of one volume: one case


def test_same_seed_same_bytes_other_seed_other_text(tmp_path):
    _build(tmp_path / "a")
    _build(tmp_path / "b")
    _build(tmp_path / "c", config=RecordConfig(seed=4))
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert (tmp_path / "a" / "records" / "shard-00000.jsonl").read_bytes() != (
        tmp_path / "c" / "records" / "shard-00000.jsonl"
    ).read_bytes()


def test_two_workers_give_the_same_bytes(tmp_path):
    _build(tmp_path / "one")
    _build(tmp_path / "two", workers=2)
    assert _tree(tmp_path / "one") == _tree(tmp_path / "two")


def test_dask_local_cluster_gives_the_same_bytes(tmp_path):
    from distributed import LocalCluster

    _build(tmp_path / "local")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        _build(
            tmp_path / "dask", scheduler=cluster.scheduler_address
        )  # what --scheduler tcp://HOST:PORT passes
    assert _tree(tmp_path / "local") == _tree(tmp_path / "dask")


def test_crash_then_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    _build(tmp_path / "clean")
    real = engine.process_shard
    calls = {"n": 0}

    def crashing(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(engine, "process_shard", crashing)
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path / "resumed")
    monkeypatch.setattr(engine, "process_shard", real)
    # a torn write of a shard: its records file changed after its part was committed
    (tmp_path / "resumed" / "records" / "shard-00000.jsonl").write_text("garbage\n")
    with pytest.raises(BuildError, match="--resume"):
        _build(tmp_path / "resumed")
    _build(tmp_path / "resumed", resume=True)
    assert _tree(tmp_path / "clean") == _tree(tmp_path / "resumed")


def test_killed_process_resumes_to_the_same_output(tmp_path):
    args = [
        sys.executable,
        "-m",
        "medground.cli",
        "build",
        str(SAMPLE / "sa_med2d_demo_ct"),
        str(SAMPLE / "hc18_fetal_ultrasound"),
        "--shard-size",
        "1",
        "--seed",
        "3",
        "--no-report",
        "--no-progress",
        "--out",
    ]
    subprocess.run([*args, str(tmp_path / "clean")], check=True, capture_output=True)
    process = subprocess.Popen(
        [*args, str(tmp_path / "killed")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 60
    while time.time() < deadline and len(list((tmp_path / "killed" / "parts").glob("*.json"))) < 2:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "manifest.json").exists()
    subprocess.run([*args, str(tmp_path / "killed"), "--resume"], check=True, capture_output=True)
    clean, killed = _tree(tmp_path / "clean"), _tree(tmp_path / "killed")
    assert {k: v for k, v in killed.items() if ".tmp" not in k} == clean


def _write_dataset(root: Path) -> None:
    """A dataset in the medseg layout that the engine has never seen: a label map and bad files."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for name in ("p01_s1", "p01_s2", "p02_s1"):
        Image.fromarray(rng.integers(0, 255, (64, 80), dtype=np.uint8)).save(root / "images" / f"{name}.png")
        labels = np.zeros((64, 80), np.uint8)
        labels[5:20, 10:30] = 1
        labels[40:60, 50:75] = 2
        Image.fromarray(labels).save(root / "masks" / f"{name}.png")
    (root / "images" / "broken.png").write_bytes((root / "images" / "p01_s1.png").read_bytes()[:100])
    Image.fromarray(np.zeros((64, 80), np.uint8)).save(root / "masks" / "broken.png")
    rows = ["image,mask,structure,case"] + [
        f"images/{n}.png,masks/{n}.png,,{n.split('_')[0]}" for n in ("p01_s1", "p01_s2", "p02_s1", "broken")
    ]
    rows.append("images/missing.png,masks/missing.png,,p03")
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    (root / "labels.json").write_text(json.dumps({"0": "background", "1": "kidney_left", "2": "liver"}))
    (root / "meta.json").write_text(json.dumps({"modality": "MRI", "body_region": "abdomen"}))


def test_unseen_dataset_with_label_maps_and_bad_files(tmp_path):
    _write_dataset(tmp_path / "new_ds")
    manifest = _build(tmp_path / "out", sources=[tmp_path / "new_ds"])
    records = _records(tmp_path / "out")
    assert manifest["counts"]["records"] == 3 and manifest["counts"]["modalities"] == {"mr": 3}
    assert {r["name"] for r in records[0]["regions"]} == {"left kidney", "liver"}
    skipped = [json.loads(line) for line in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()]
    reasons = {Path(s["input"]).name: s["reason"] for s in skipped}
    assert "broken.png" in reasons and "missing.png" in reasons
    assert manifest["counts"]["skipped"] == len(skipped)


def test_existing_output_needs_resume_or_overwrite(tmp_path):
    _build(tmp_path / "out", sources=[SAMPLE / "brats2021_flair_mr"])
    with pytest.raises(BuildError, match="--resume"):
        _build(tmp_path / "out", sources=[SAMPLE / "brats2021_flair_mr"])
    with pytest.raises(BuildError, match="another config"):
        _build(
            tmp_path / "out",
            sources=[SAMPLE / "brats2021_flair_mr"],
            config=RecordConfig(seed=9),
            resume=True,
        )
    _build(
        tmp_path / "out", sources=[SAMPLE / "brats2021_flair_mr"], config=RecordConfig(seed=9), overwrite=True
    )


def test_manifest_counts_and_shard_hashes(tmp_path):
    manifest = _build(tmp_path / "out")
    records = _records(tmp_path / "out")
    assert sum(manifest["counts"]["modalities"].values()) == len(records)
    assert manifest["counts"]["tasks"] == {
        t: sum(r["tasks"].count(t) for r in records) for t in manifest["counts"]["tasks"]
    }
    for shard in manifest["shards"]:
        assert hashlib.sha256((tmp_path / "out" / shard["file"]).read_bytes()).hexdigest() == shard["sha256"]


def test_keys_differing_only_in_punctuation_get_separate_mask_files():
    from medground.data.records import mask_paths
    from medground.types import Box, Region, Sample, StructureMask

    keys = ("left_kidney", "left kidney", "liver (organ)")
    full = np.ones((4, 4), bool)
    sample = Sample(
        "src/img", np.zeros((4, 4), np.uint8), "ct", "src", "case", [StructureMask(k, full) for k in keys]
    )
    paths = mask_paths(sample, [Region(k, k, Box(0, 0, 2, 2), np.ones((2, 2), bool), 0, 4) for k in keys])
    assert len(set(paths)) == 3
    assert paths[0].startswith("masks/src/img/left_kidney-") and paths[1].startswith(
        "masks/src/img/left_kidney-"
    )
    assert paths[2] == "masks/src/img/liver_organ_000.png"  # no clash: the plain safe name
