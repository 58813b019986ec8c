"""`medground build --masks rle`: the same masks as a PNG build, region by region, and every consumer reads them."""

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from typer.testing import CliRunner

from medground.cli import app
from medground.data.export import export, load_hf_dataset
from medground.data.records import RecordConfig
from medground.data.report import write_report
from medground.icl.targets import targets_from_engine

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "medground" / "sample" / "medseg"
SOURCES = sorted(str(p) for p in SAMPLE.iterdir() if (p / "pairs.csv").exists())


def _records(out: Path) -> list[dict]:
    return [
        json.loads(line)
        for f in sorted((out / "records").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    """The sample collection built twice through the CLI, identical but for the mask form."""
    root = tmp_path_factory.mktemp("rle")
    outs = {}
    for form in ("png", "rle"):
        out = root / form
        args = ["build", *SOURCES, "--out", str(out), "--seed", "5", "--masks", form, "--no-progress"]
        result = CliRunner().invoke(app, [*args, "--no-report", "--shard-size", "4"])
        assert result.exit_code == 0, result.output
        outs[form] = out
    return outs


def test_rle_build_has_the_png_builds_masks_region_by_region(builds):
    png, rle = _records(builds["png"]), _records(builds["rle"])
    assert len(png) == len(rle) > 10
    regions = 0
    for a, b in zip(png, rle, strict=True):
        assert {k: v for k, v in a.items() if k != "regions"} == {
            k: v for k, v in b.items() if k != "regions"
        }
        assert len(a["regions"]) == len(b["regions"]) > 0
        for ra, rb in zip(a["regions"], b["regions"], strict=True):
            assert "rle" not in ra and "mask" not in rb
            assert {k: v for k, v in ra.items() if k != "mask"} == {k: v for k, v in rb.items() if k != "rle"}
            # read each side with a reader independent of medground: PIL for the PNG, pycocotools for the RLE
            from_png = np.asarray(Image.open(builds["png"] / ra["mask"])) > 0
            counts = rb["rle"]["counts"].encode("ascii")
            from_rle = coco_mask.decode({"size": rb["rle"]["size"], "counts": counts}).astype(bool)
            assert rb["rle"]["size"] == [a["height"], a["width"]]
            np.testing.assert_array_equal(from_rle, from_png)
            assert int(from_rle.sum()) == ra["area"]
            regions += 1
    assert regions == json.loads((builds["rle"] / "manifest.json").read_text())["counts"]["regions"]


def test_rle_build_writes_no_mask_files_and_states_its_schema(builds):
    assert not (builds["rle"] / "masks").exists()
    assert any((builds["png"] / "masks").rglob("*.png"))
    manifests = {form: json.loads((out / "manifest.json").read_text()) for form, out in builds.items()}
    assert manifests["rle"]["schema_version"] == manifests["png"]["schema_version"] == 2
    assert (manifests["png"]["config"]["masks"], manifests["rle"]["config"]["masks"]) == ("png", "rle")
    assert manifests["png"]["counts"] == manifests["rle"]["counts"]


def test_report_draws_the_same_overlays_from_rle(builds):
    pixels = {}
    for form, out in builds.items():
        html = write_report(out).read_text()
        assert "could not be read" not in html
        pixels[form] = np.asarray(Image.open(out / "report" / "overlays.png"))
    np.testing.assert_array_equal(pixels["rle"], pixels["png"])


def test_icl_tasks_from_an_rle_build_equal_those_from_png(builds):
    tasks = {form: targets_from_engine(out, size=32, keep_full=True) for form, out in builds.items()}
    assert [t.name for t in tasks["rle"].tasks] == [t.name for t in tasks["png"].tasks]
    assert tasks["rle"].tasks
    for a, b in zip(tasks["png"].tasks, tasks["rle"].tasks, strict=True):
        assert np.array_equal(a.masks.numpy(), b.masks.numpy())
        for full_a, full_b in zip(a.full_masks, b.full_masks, strict=True):
            np.testing.assert_array_equal(full_a, full_b)


def test_exports_carry_the_rle(builds, tmp_path):
    ds = load_hf_dataset(builds["rle"], cache_dir=tmp_path / "hf")
    first = _records(builds["rle"])[0]["regions"][0]
    assert ds[0]["regions"][0]["rle"] == first["rle"]
    assert ds[0]["regions"][0]["mask"] is None
    png = load_hf_dataset(builds["png"], cache_dir=tmp_path / "hf2")
    assert png[0]["regions"][0]["rle"] is None and png[0]["regions"][0]["mask"].startswith("masks/")
    shards = export(builds["rle"], "webdataset", dest=tmp_path / "wds")
    with tarfile.open(next(shards.glob("shard-*.tar"))) as tar:
        sample = json.load(tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith(".json"))))
    assert "rle" in sample["record"]["regions"][0]  # the record unchanged (a JSON object in the tar)


def test_unknown_mask_form_is_refused():
    with pytest.raises(ValueError, match="masks must be one of png, rle, got 'tif'"):
        RecordConfig(masks="tif")
    result = CliRunner().invoke(app, ["build", SOURCES[0], "--out", "unused", "--masks", "tif"])
    assert result.exit_code == 2
    assert "masks must be one of png, rle" in result.output
