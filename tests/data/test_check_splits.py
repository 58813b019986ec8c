"""`medground check-splits`: patient keys and near duplicates across splits, on build folders written by hand.

Each build folder here is made the way `medground build` lays it out (records/shard-*.jsonl with `image`,
`source`, `case`, `split`; images under images/<source>/), and the expected leaks are known by construction.
"""

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medground.cli import app
from medground.data import records as records_module
from medground.data.api import build_dataset
from medground.data.records import RecordConfig
from medground.data.splits import (
    SplitLeakError,
    check_splits,
    require_one_split_per_patient,
)
from medground.io import ReadError
from medground.io.phash import near_pairs

runner = CliRunner()
SAMPLE = Path(__file__).resolve().parents[2] / "src" / "medground" / "sample" / "medseg"
HC18 = SAMPLE / "hc18_fetal_ultrasound" / "images"
KVASIR = SAMPLE / "kvasir_seg_endoscopy" / "images"


def _write_build(
    root: Path, rows: list[tuple[str, str, str | None, str]], images: dict[str, Path | bytes]
) -> Path:
    """A build folder: one record per row ``(image name, source, case, split)``; ``images`` gives each
    saved image's source file (copied byte for byte) or its encoded bytes."""
    lines = []
    for index, (name, source, case, split) in enumerate(rows):
        image = f"images/{source}/{name}"
        target = root / image
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            content = images[name]
            target.write_bytes(content if isinstance(content, bytes) else content.read_bytes())
        record = {
            "id": f"{source}/{name}#{index}",
            "image": image,
            "source": source,
            "case": case,
            "split": split,
        }
        lines.append(json.dumps(record) + "\n")
    (root / "records").mkdir(parents=True)
    (root / "records" / "shard-00000.jsonl").write_text("".join(lines))
    return root


def _jpeg_resized(path: Path, factor: float, crop: float = 0.0) -> bytes:
    """The picture at ``path``, cut by ``crop`` of its size on every side, resized by ``factor``, saved as JPEG q80."""
    picture = Image.open(path).convert("RGB")
    width, height = picture.size
    picture = picture.crop(
        (round(crop * width), round(crop * height), round((1 - crop) * width), round((1 - crop) * height))
    )
    picture = picture.resize(
        (round(picture.width * factor), round(picture.height * factor)), Image.Resampling.LANCZOS
    )
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def test_a_patient_in_two_splits_fails_with_its_key_named(tmp_path):
    build = _write_build(
        tmp_path / "build",
        [
            ("000_HC.png", "hc18", "hc18/p1", "train"),
            ("003_HC.png", "hc18", "hc18/p1", "test"),  # the leak: p1 also in test
            ("006_HC.png", "hc18", "hc18/p2", "val"),
            ("009_HC.png", "hc18", None, "train"),
        ],
        {n: HC18 / n for n in ("000_HC.png", "003_HC.png", "006_HC.png", "009_HC.png")},
    )
    result = runner.invoke(app, ["check-splits", str(build), "--no-near-duplicates", "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "hc18/p1" in result.output and "hc18/p2" not in result.output
    assert "LEAK" in result.output

    result = runner.invoke(app, ["check-splits", str(build), "--json", "--no-near-duplicates"])
    assert result.exit_code == 1
    found = json.loads(result.output)
    assert found["clean"] is False and found["unknown_patient_images"] == 1
    assert [(leak["kind"], leak["key"], sorted(leak["where"])) for leak in found["patient_leaks"]] == [
        ("patient", "hc18/p1", ["test", "train"])
    ]


def test_a_clean_build_exits_zero(tmp_path):
    build = _write_build(
        tmp_path / "build",
        [
            ("000_HC.png", "hc18", "a", "train"),
            ("000_HC.png", "hc18", "a", "train"),
            ("003_HC.png", "hc18", "b", "test"),
        ],
        {n: HC18 / n for n in ("000_HC.png", "003_HC.png")},
    )
    result = runner.invoke(app, ["check-splits", str(build), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "clean: 2 images, 3 records" in " ".join(result.output.split())


def test_copied_and_resaved_images_under_other_names_are_flagged(tmp_path):
    original, other = HC18 / "000_HC.png", KVASIR / "cju0qkwl35piu0993l0dewei2.jpg"
    build = _write_build(
        tmp_path / "build",
        [
            ("000_HC.png", "hc18", "p1", "train"),
            ("cju0qkwl35piu0993l0dewei2.jpg", "kvasir", None, "train"),
            ("copy_of_it.png", "hc18", "p7", "test"),  # byte copy, another name, another patient key
            ("resaved.jpg", "hc18", "p8", "val"),  # JPEG q80 of a 0.6x resize
            ("cropped.jpg", "hc18", "p9", "test"),  # 8% cut from each side, 0.8x, JPEG q80
            ("colon_resaved.jpg", "kvasir", "k2", "test"),  # the kvasir frame resized 0.5x
            ("003_HC.png", "hc18", "p3", "test"),  # a different ultrasound of the same kind: no leak
        ],
        {
            "000_HC.png": original,
            "cju0qkwl35piu0993l0dewei2.jpg": other,
            "copy_of_it.png": original,
            "resaved.jpg": _jpeg_resized(original, 0.6),
            "cropped.jpg": _jpeg_resized(original, 0.8, crop=0.08),
            "colon_resaved.jpg": _jpeg_resized(other, 0.5),
            "003_HC.png": HC18 / "003_HC.png",
        },
    )
    report = check_splits([build], progress=False)
    assert not report.patient_leaks
    pairs = {frozenset((Path(d.first).name, Path(d.second).name)) for d in report.duplicate_leaks}
    # Same-split pairs (resaved vs cropped are val/test: they count) are listed once each.
    original_family = ["000_HC.png", "copy_of_it.png", "resaved.jpg", "cropped.jpg"]
    split = {"000_HC.png": "train", "copy_of_it.png": "test", "resaved.jpg": "val", "cropped.jpg": "test"}
    expected = {
        frozenset((a, b))
        for i, a in enumerate(original_family)
        for b in original_family[i + 1 :]
        if split[a] != split[b]
    }
    expected.add(frozenset(("cju0qkwl35piu0993l0dewei2.jpg", "colon_resaved.jpg")))
    assert pairs == expected

    result = runner.invoke(app, ["check-splits", str(build), "--no-progress"])
    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert "One picture in two splits" in said and "6 near-duplicate pairs" in said


def test_pairs_within_one_split_are_not_leaks(tmp_path):
    original = HC18 / "000_HC.png"
    build = _write_build(
        tmp_path / "build",
        [
            ("000_HC.png", "hc18", "p1", "train"),
            ("again.png", "hc18", "p2", "train"),
            ("003_HC.png", "hc18", "p3", "test"),
        ],
        {"000_HC.png": original, "again.png": original, "003_HC.png": HC18 / "003_HC.png"},
    )
    assert check_splits([build], progress=False).clean


def test_distinct_real_images_of_two_datasets_are_not_flagged(tmp_path, shared_data):
    # The closest cross-dataset pair of the shared collection by hash (6 bits of 64): two colour fundus
    # photographs of the same eye side from different datasets, so different patients and pictures.
    drive = shared_data / "medseg" / "drive_fundus" / "images" / "25_training.tif"
    fives = shared_data / "medseg" / "fives_fundus_vessels" / "images" / "27_A.jpg"
    build = _write_build(
        tmp_path / "build",
        [("25_training.tif", "drive", "d25", "train"), ("27_A.jpg", "fives", "f27", "test")],
        {"25_training.tif": drive, "27_A.jpg": fives},
    )
    report = check_splits([build], progress=False)
    assert report.clean and report.duplicate_leaks == []


def test_two_patients_chest_x_rays_are_not_flagged(tmp_path, shared_data):
    # Two Shenzhen chest X-rays of two patients (each image is its own patient there): same anatomy and
    # positioning, 6 bits apart, a global high-pass correlation of 0.63; still two pictures.
    root = shared_data / "medseg" / "shenzhen_cxr_lung_xray" / "images"
    build = _write_build(
        tmp_path / "build",
        [("CHNCXR_0001_0.png", "shenzhen", "s1", "train"), ("CHNCXR_0002_0.png", "shenzhen", "s2", "test")],
        {"CHNCXR_0001_0.png": root / "CHNCXR_0001_0.png", "CHNCXR_0002_0.png": root / "CHNCXR_0002_0.png"},
    )
    report = check_splits([build], progress=False)
    assert report.clean and report.duplicate_leaks == []


def test_leaks_across_two_builds(tmp_path):
    original = HC18 / "000_HC.png"
    first = _write_build(
        tmp_path / "first",
        [("000_HC.png", "hc18", "hc18/p1", "train"), ("003_HC.png", "hc18", "hc18/p3", "train")],
        {"000_HC.png": original, "003_HC.png": HC18 / "003_HC.png"},
    )
    second = _write_build(
        tmp_path / "second",
        [("006_HC.png", "hc18b", "hc18/p1", "test"), ("renamed.jpg", "other", None, "test")],
        {"006_HC.png": HC18 / "006_HC.png", "renamed.jpg": _jpeg_resized(HC18 / "003_HC.png", 0.7)},
    )
    assert check_splits([first], progress=False).clean and check_splits([second], progress=False).clean
    report = check_splits([first, second], progress=False)
    assert [leak.key for leak in report.patient_leaks] == ["hc18/p1"]
    assert set(report.patient_leaks[0].where) == {"train", "test"}
    assert [(Path(d.first).name, Path(d.second).name) for d in report.duplicate_leaks] == [
        ("003_HC.png", "renamed.jpg")
    ]
    result = runner.invoke(app, ["check-splits", str(first), str(second), "--no-progress"])
    assert result.exit_code == 1 and "hc18/p1" in result.output


def test_an_image_with_records_in_two_splits_is_a_leak(tmp_path):
    build = _write_build(
        tmp_path / "build",
        [("000_HC.png", "hc18", None, "train"), ("000_HC.png", "hc18", None, "val")],
        {"000_HC.png": HC18 / "000_HC.png"},
    )
    report = check_splits([build], near_duplicates=False, progress=False)
    assert [(leak.kind, Path(leak.key).name) for leak in report.patient_leaks] == [("image", "000_HC.png")]


def test_bad_input_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["check-splits", str(tmp_path)])
    assert (
        result.exit_code == 2 and "records/shard-*.jsonl" in result.output and str(tmp_path) in result.output
    )
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "shard-00000.jsonl").write_text('{"image": "a.png", "source": "s"}\n{oops\n')
    result = runner.invoke(app, ["check-splits", str(tmp_path)])
    assert result.exit_code == 2 and "shard-00000.jsonl" in result.output and "line 1" in result.output
    (tmp_path / "records" / "shard-00000.jsonl").write_text(
        '{"image": "images/s/a.png", "source": "s", "case": "x", "split": "train"}\n'
        '{"image": "images/s/b.png", "source": "s", "case": "y", "split": "test"}\n'
    )
    result = runner.invoke(app, ["check-splits", str(tmp_path), "--no-progress"])
    assert result.exit_code == 2 and "a.png" in result.output and "not found" in result.output


def test_require_one_split_per_patient_names_the_key(tmp_path):
    build = _write_build(
        tmp_path / "build",
        [("000_HC.png", "hc18", "k1", "train"), ("003_HC.png", "hc18", "k1", "val")],
        {n: HC18 / n for n in ("000_HC.png", "003_HC.png")},
    )
    with pytest.raises(SplitLeakError, match="'k1'"):
        require_one_split_per_patient(build, [build / "records" / "shard-00000.jsonl"])


def test_the_build_fails_before_its_manifest_when_a_patient_crosses_splits(tmp_path, monkeypatch):
    source = tmp_path / "hc18_fetal_ultrasound"
    shutil.copytree(SAMPLE / "hc18_fetal_ultrasound", source)
    with open(source / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(source / "pairs.csv", "w", newline="") as handle:  # all six scans of one mother
        writer = csv.DictWriter(handle, [*rows[0], "case"])
        writer.writeheader()
        writer.writerows({**row, "case": "mother1"} for row in rows)
    out = tmp_path / "out"
    build_dataset([source], out, RecordConfig(seed=0), report=False, progress=False)
    assert check_splits(
        [out], near_duplicates=False, progress=False
    ).clean  # the real rule: one split per key

    # A split rule broken on purpose: alternate splits image by image.
    calls = iter(range(1000))
    monkeypatch.setattr(
        records_module, "split_of", lambda case, seed, ratios: ("train", "test")[next(calls) % 2]
    )
    with pytest.raises(SplitLeakError, match="mother1"):
        build_dataset([source], tmp_path / "broken", RecordConfig(seed=0), report=False, progress=False)
    assert not (tmp_path / "broken" / "manifest.json").exists()


def _jpeg_turned(path: Path, transpose: Image.Transpose | None, crop: float = 0.0) -> bytes:
    """The picture at ``path`` cut by ``crop`` per side, turned or mirrored by ``transpose``, as JPEG q80."""
    picture = Image.open(path).convert("RGB")
    width, height = picture.size
    picture = picture.crop(
        (round(crop * width), round(crop * height), round((1 - crop) * width), round((1 - crop) * height))
    )
    picture = picture.transpose(transpose) if transpose is not None else picture
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def test_mirrored_and_turned_copies_are_flagged(tmp_path):
    # volume slices are shown radiologically and 2D collections in either convention: a mirrored or
    # turned copy of a picture is the same picture
    original = KVASIR / "cju0qkwl35piu0993l0dewei2.jpg"
    build = _write_build(
        tmp_path / "build",
        [
            ("frame.jpg", "kvasir", "k1", "train"),
            ("mirrored.jpg", "kvasir", "k2", "test"),
            ("turned.jpg", "kvasir", "k3", "val"),
            ("cut_and_upside_down.jpg", "kvasir", "k4", "val"),
            ("other.jpg", "kvasir", "k5", "test"),  # another polyp: not a copy
        ],
        {
            "frame.jpg": original,
            "mirrored.jpg": _jpeg_turned(original, Image.Transpose.FLIP_LEFT_RIGHT),
            "turned.jpg": _jpeg_turned(original, Image.Transpose.ROTATE_90),
            "cut_and_upside_down.jpg": _jpeg_turned(original, Image.Transpose.FLIP_TOP_BOTTOM, crop=0.06),
            "other.jpg": KVASIR / "cju0qoxqj9q6s0835b43399p4.jpg",
        },
    )
    report = check_splits([build], progress=False)
    pairs = {frozenset((Path(d.first).name, Path(d.second).name)) for d in report.duplicate_leaks}
    family = {
        "frame.jpg": "train",
        "mirrored.jpg": "test",
        "turned.jpg": "val",
        "cut_and_upside_down.jpg": "val",
    }
    names = sorted(family)
    expected = {
        frozenset((a, b)) for i, a in enumerate(names) for b in names[i + 1 :] if family[a] != family[b]
    }
    assert pairs == expected
    # orientation names the turn of the second picture relative to the first
    turned = {
        frozenset((Path(d.first).name, Path(d.second).name)): d.orientation for d in report.duplicate_leaks
    }
    assert turned[frozenset(("frame.jpg", "mirrored.jpg"))] in ("mirror", "mirror 180")


def test_the_build_stores_the_hashes_check_splits_reads(tmp_path):
    out = tmp_path / "out"
    build_dataset([SAMPLE / "kvasir_seg_endoscopy"], out, RecordConfig(), report=False, progress=False)
    records = [
        json.loads(line) for f in (out / "records").glob("*.jsonl") for line in f.read_text().splitlines()
    ]
    assert records and all(len(r["phash"]) == 16 * (8 + 81) for r in records)
    # check-splits uses what is stored: a damaged field is named, not silently recomputed
    shard = next((out / "records").glob("*.jsonl"))
    lines = shard.read_text().splitlines()
    damaged = json.loads(lines[0])
    damaged["phash"] = damaged["phash"][:-2]
    damaged["split"] = "test" if damaged["split"] != "test" else "train"
    damaged["image"] = damaged["image"].replace(".jpg", "_b.jpg")
    shutil.copy(out / records[0]["image"], out / damaged["image"])
    shard.write_text("\n".join([*lines, json.dumps(damaged)]) + "\n")
    with pytest.raises(ReadError, match="phash"):
        check_splits([out], progress=False)


def test_keys_that_look_alike_across_sources_are_reported(tmp_path):
    build = _write_build(
        tmp_path / "build",
        [
            ("a.png", "kits", "case_00220", "train"),
            ("b.png", "abdomenct1k", "AbdomenCT1K--Case_00220", "test"),
            ("c.png", "nnunet", "nnunet:case_00220_0000", "test"),
            ("d.png", "kits", "case_00221", "train"),
            ("e.png", "hc18", "hc18/case_00221", "test"),  # medground's own per-image key: not compared
            ("f.png", "kits", "Case_00221", "train"),  # same source: not a cross-source look-alike
        ],
        {n: HC18 / "000_HC.png" for n in "abcdef"} | {n + ".png": HC18 / "000_HC.png" for n in "abcdef"},
    )
    report = check_splits([build], near_duplicates=False)
    assert [(g.form, sorted(g.keys), g.splits) for g in report.lookalike_keys] == [
        ("case220", ["AbdomenCT1K--Case_00220", "case_00220", "nnunet:case_00220_0000"], True)
    ]
    result = runner.invoke(app, ["check-splits", str(build), "--no-progress", "--no-near-duplicates"])
    assert "look alike" in " ".join(result.output.split())


def test_near_pairs_finds_close_orientation_hashes_without_comparing_all_pairs():
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 2**63, size=(50, 8 + 81), dtype=np.uint64)
    # image 7 in orientation 5 is image 3's window 40 with 3 bits flipped; image 9 in orientation 0 is
    # image 3's window 2 with 30 bits flipped (too far)
    stored[7, 5] = stored[3, 8 + 40] ^ np.uint64(0b1011 << 20)
    stored[9, 0] = stored[3, 8 + 2] ^ np.uint64((1 << 30) - 1)
    found = {tuple(row) for row in near_pairs(stored).tolist()}
    assert (3, 7, 5) in found
    assert not any(i == 3 and j == 9 for i, j, _ in found)
    assert all(i != j for i, j, _ in found)
