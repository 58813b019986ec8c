from medground.demo import HC18_PAIRS, run_demo


def test_main_job_builds_reports_asks_and_segments(tmp_path):
    said: list[str] = []
    manifest = run_demo(tmp_path, say=said.append, progress=False)
    assert (
        manifest["counts"]["records"] == 33 and manifest["counts"]["skipped"] == 1
    )  # one speck-only covid mask
    assert (tmp_path / "data" / "report" / "report.html").is_file()
    assert any(line.startswith("bird-nano") for line in said), said
    assert (tmp_path / "ask.png").is_file()
    assert all((tmp_path / "segment" / f"{q.stem}_overlay.png").is_file() for q, _ in HC18_PAIRS)
    assert any("mean" in line and "Dice" in line for line in said), said
