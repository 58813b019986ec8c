from medground.demo import HC18_PAIRS, run_demo


def test_main_job_builds_reports_asks_and_segments(tmp_path):
    said: list[str] = []
    manifest = run_demo(tmp_path, say=said.append, progress=False)
    # one record per bundled image, each has a region: 4 SA-Med2D + 8 BraTS + 6 HC18 + 3 Kvasir + 4 Shenzhen
    assert manifest["counts"]["records"] == 25 and manifest["counts"]["skipped"] == 0
    assert (tmp_path / "data" / "report" / "report.html").is_file()
    assert any(line.startswith("bird-nano") for line in said), said
    assert (tmp_path / "ask.png").is_file()
    assert all((tmp_path / "segment" / f"{q.stem}_overlay.png").is_file() for q, _ in HC18_PAIRS)
    assert any("mean" in line and "Dice" in line for line in said), said


def test_the_demo_segments_a_dataset_the_shipped_icl_weights_held_out():
    """The demo says its fetal-head images come from a dataset held out of training: the weights' own
    record must say so (other ultrasound, usgra, was in training, so it must not claim a modality)."""
    import json

    from medground.icl.segmenter import DEFAULT_WEIGHTS

    meta = json.loads((DEFAULT_WEIGHTS / "meta.json").read_text())
    assert "hc18_fetal_ultrasound" in meta["train_config"]["held_out"]
    assert not any(task.startswith("hc18_fetal_ultrasound/") for task in meta["tasks"])
    assert all("hc18" in str(image) for image, _ in HC18_PAIRS)
