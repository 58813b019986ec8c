"""The SA-Med2D source streams its index files, and `medground build --plan-only` lists a build.

Expected values come from reading the whole index with ``json.loads`` (what the source did before it
streamed) or from a real build's manifest, never from the streaming code itself.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medground.cli import app
from medground.data.sources import Item, SourceError, open_source
from medground.data.sources.base import nearby_names, slice_position

runner = CliRunner()


def _write(root: Path, train: dict, test: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "image2label_train.json").write_text(json.dumps(train, indent=4))
    (root / "label2image_test.json").write_text(json.dumps(test, indent=4))
    return root


def _index(n_images: int, masks_per_image: int = 4) -> tuple[dict, dict]:
    """An index in SA-Med2D's naming scheme: even slices in image2label, odd ones mask-keyed in
    label2image, that file written mask instance by mask instance so one image's masks lie far apart."""
    train, test = {}, {}
    for k in range(n_images):
        stem = f"ct_00--AMOS--case_{k // 10:04d}--x_{k % 10:04d}"
        masks = [f"d/masks/{stem}_organ_{j % 3}_{j:03d}.png" for j in range(masks_per_image)]
        if k % 2 == 0:
            train[f"d/images/{stem}.png"] = masks
    for j in range(masks_per_image):
        for k in range(n_images - 1, -1, -1):
            stem = f"ct_00--AMOS--case_{k // 10:04d}--x_{k % 10:04d}"
            if k % 2:
                test[f"d/masks/{stem}_organ_{j % 3}_{j:03d}.png"] = f"d/images/{stem}.png"
    return train, test


def test_items_are_the_sorted_images_with_their_sorted_masks_from_both_files(tmp_path):
    train = {
        "d/images/mr_t1--BraTS--c1--z_0012.png": ["d/masks/mr_t1--BraTS--c1--z_0012_tumor_001.png"],
        "d/images/ct_00--AMOS--c9--x_0003.png": [
            "d/masks/ct_00--AMOS--c9--x_0003_spleen_000.png",
            "d/masks/ct_00--AMOS--c9--x_0003_liver_000.png",
            "d/masks/ct_00--AMOS--c9--x_0003_liver_000.png",  # listed twice
        ],
        "d/images/ct_00--AMOS--c9--x_0001.png": [],  # no mask: kept, its load says so
    }
    test = {  # the same image as in image2label gets the masks of both files
        "d/masks/mr_t1--BraTS--c1--z_0012_edema_000.png": "d/images/mr_t1--BraTS--c1--z_0012.png",
        "d/masks/ct_00--AMOS--c9--x_0004_kidney_left_000.png": "d/images/ct_00--AMOS--c9--x_0004.png",
        "d/masks/mr_t1--BraTS--c1--z_0012_tumor_000.png": "d/images/mr_t1--BraTS--c1--z_0012.png",
    }
    source = open_source(f"sa-med2d:{_write(tmp_path / 'ds', train, test)}")
    items = [i for i in source.items() if isinstance(i, Item)]
    assert [i.key for i in items] == [
        "ct_00--AMOS--c9--x_0001",
        "ct_00--AMOS--c9--x_0003",
        "ct_00--AMOS--c9--x_0004",
        "mr_t1--BraTS--c1--z_0012",
    ]
    masks = {i.key: [(Path(m.path).name, m.name, m.instance) for m in i.payload["masks"]] for i in items}
    assert masks["ct_00--AMOS--c9--x_0001"] == []
    assert masks["ct_00--AMOS--c9--x_0003"] == [
        ("ct_00--AMOS--c9--x_0003_liver_000.png", "liver", 0),
        ("ct_00--AMOS--c9--x_0003_spleen_000.png", "spleen", 0),
    ]
    assert masks["mr_t1--BraTS--c1--z_0012"] == [
        ("mr_t1--BraTS--c1--z_0012_edema_000.png", "edema", 0),
        ("mr_t1--BraTS--c1--z_0012_tumor_000.png", "tumor", 0),
        ("mr_t1--BraTS--c1--z_0012_tumor_001.png", "tumor", 1),
    ]
    nearby = {i.key: i.payload["nearby"] for i in items}
    # x_0001 sees x_0003 (liver, spleen) and x_0004 (kidney_left); x_0003 and x_0004 see each other
    assert nearby["ct_00--AMOS--c9--x_0001"] == ["kidney_left", "liver", "spleen"]
    assert nearby["ct_00--AMOS--c9--x_0003"] == ["kidney_left"]
    assert nearby["ct_00--AMOS--c9--x_0004"] == ["liver", "spleen"]
    assert nearby["mr_t1--BraTS--c1--z_0012"] == []
    # the index names its masks but none is on disk, so none is known to be large enough to have survived
    # SA-Med2D's small-mask filter: every protocol is listed, with no structure that may be called absent
    assert source.protocols() == {"AMOS ct": [], "BraTS mr": []}
    assert source.vocabulary() == ["edema", "kidney_left", "liver", "spleen", "tumor"]
    assert {i.case for i in items} == {"AMOS--c9", "BraTS--c1"}


def test_a_larger_index_plans_as_reading_it_whole_would(tmp_path):
    train, test = _index(300)
    source = open_source(f"sa-med2d:{_write(tmp_path / 'ds', train, test)}")
    whole: dict[str, set[str]] = {}  # the index read whole, as the source did before it streamed
    for image, masks in train.items():
        whole.setdefault(image, set()).update(masks)
    for mask, image in test.items():
        whole.setdefault(image, set()).add(mask)
    neighbours: dict[str, list] = {}
    for image, masks in whole.items():
        stem = Path(image).stem
        names = frozenset(Path(m).stem[len(stem) + 1 : -4] for m in masks)  # "organ_1_004" -> "organ_1"
        neighbours.setdefault(slice_position(stem)[0], []).append((slice_position(stem)[1], names))
    items = list(source.items())
    on_disk = tmp_path / "ds"  # no file exists: each path resolves to the folder without "d/"
    assert [i.payload["image"] for i in items] == [str(on_disk / i[2:]) for i in sorted(whole)]
    for item, image in zip(items, sorted(whole), strict=True):
        assert [m.path for m in item.payload["masks"]] == [str(on_disk / m[2:]) for m in sorted(whole[image])]
        assert item.payload["nearby"] == nearby_names(slice_position(item.key), neighbours)
    assert source.vocabulary() == ["organ_0", "organ_1", "organ_2"]


_PEAK = """
import sys, tracemalloc
from medground.data.sources import open_source
tracemalloc.start()
for _ in open_source("sa-med2d:" + sys.argv[1]).items():
    pass
print(tracemalloc.get_traced_memory()[1])
"""


def _planning_peak(root: Path) -> int:
    """Peak Python allocation of opening and planning ``root``, in a fresh process (tracemalloc counts
    every thread's allocations, and threads that other tests left behind would count too)."""
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, str(root)], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


def test_planning_memory_does_not_grow_with_the_index(tmp_path):
    small = _write(tmp_path / "small", *_index(1000))
    large = _write(tmp_path / "large", *_index(4000))
    peak_small, peak_large = _planning_peak(small), _planning_peak(large)
    # Python objects only (SQLite's page cache is outside, bounded by its cache_size): 4x the index,
    # not 4x the memory (reading the index whole would hold every entry at once)
    assert peak_large < 1.3 * peak_small, (peak_small, peak_large)


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("image2label_train.json", '["d/images/a.png"]', "must be one JSON object"),
        ("image2label_train.json", '{"d/images/a.png": ["d/masks/a_x_000.png"', "not valid JSON"),
        ("image2label_train.json", '{"d/images/a.png": "d/masks/a_x_000.png"}', "must be named label2image"),
        (
            "label2image_test.json",
            '{"d/masks/a_x_000.png": ["d/images/a.png"]}',
            "maps each mask to one image",
        ),
    ],
)
def test_bad_index_files_name_the_file_and_the_reason(tmp_path, name, text, reason):
    (tmp_path / name).write_text(text)
    with pytest.raises(SourceError, match=reason) as error:
        open_source(f"sa-med2d:{tmp_path}")
    assert str(tmp_path / name) in str(error.value)


def _dataset(root: Path) -> Path:
    """Ten CT slices of five patients with real pixels; patients split across train, val and test."""
    (root / "d" / "images").mkdir(parents=True)
    (root / "d" / "masks").mkdir()
    train = {}
    for k in range(10):
        stem = f"ct_00--AMOS--patient_{k // 2}--x_{k % 2:04d}"
        Image.fromarray(np.full((32, 32), 60 + k, np.uint8)).save(root / "d" / "images" / f"{stem}.png")
        mask = np.zeros((32, 32), np.uint8)
        mask[4:20, 6:26] = 255
        Image.fromarray(mask).save(root / "d" / "masks" / f"{stem}_liver_000.png")
        train[f"d/images/{stem}.png"] = [f"d/masks/{stem}_liver_000.png"]
    (root / "image2label_train.json").write_text(json.dumps(train))
    return root


def test_plan_only_lists_what_the_build_then_builds_without_reading_pixels(tmp_path, monkeypatch):
    root = _dataset(tmp_path / "ds")
    built = runner.invoke(
        app, ["build", f"sa-med2d:{root}", "--out", str(tmp_path / "out"), "--no-report", "--no-progress"]
    )
    assert built.exit_code == 0, built.output
    counts = json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]

    def no_pixels(path):
        raise AssertionError(f"plan-only read {path}")

    monkeypatch.setattr("medground.data.sources.planar.read_image_as_stored", no_pixels)
    before = sorted(tmp_path.rglob("*"))
    planned = runner.invoke(app, ["build", f"sa-med2d:{root}", "--plan-only", "--seed", "0"])
    assert planned.exit_code == 0, planned.output
    assert sorted(tmp_path.rglob("*")) == before  # nothing written
    rows = {line.split()[0]: line.split() for line in planned.output.splitlines()}
    assert rows["source"] == [
        "source",
        "kind",
        "items",
        "train",
        "val",
        "test",
        "unknown",
        "patient",
        "rejected",
    ]
    splits = counts["splits"]  # one record per image in the build
    assert len(splits) > 1
    expected = [str(counts["images"]), *(str(splits.get(s, 0)) for s in ("train", "val", "test")), "0", "0"]
    assert rows["ds"] == ["ds", "sa-med2d", *expected]
    assert rows["total"] == ["total", *expected]


def test_build_without_out_or_plan_only_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["build", f"sa-med2d:{_dataset(tmp_path / 'ds')}"])
    assert result.exit_code == 2 and "--out is required" in result.output
