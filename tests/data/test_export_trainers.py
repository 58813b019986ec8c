"""Every format x dialect, loaded the way its trainer loads it (``_trainer_loaders``: each trainer's data
path re-implemented from its source) at the trainer's default pixel cap and at 262144 pixels (the cap of
LLaMA-Factory's VL example configs): every row loads and every box matches its mask's box in the frame
the trainer feeds (IoU >= 0.9; boxes under 8 x 8 fed pixels exempt and counted). Plus the manifest, the
snippets, ``--check-config`` and file modes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from medground.cli import app
from medground.data.export import FORMATS, check_config, export, manifest_path

try:
    from _trainer_loaders import DIALECT_TEXT, LF_DEFAULT, SWIFT_DEFAULT, box_iou, fed_mask_box, load_export
except ImportError:  # tests/ laid out as packages
    from tests.data._trainer_loaders import (
        DIALECT_TEXT,
        LF_DEFAULT,
        SWIFT_DEFAULT,
        box_iou,
        fed_mask_box,
        load_export,
    )

CAP = 262144  # LLaMA-Factory's VL examples' image_max_pixels; ms-swift MAX_PIXELS in the report
W, H = 700, 560  # 392,000 pixels: between the 262144 cap and LLaMA-Factory's default 589824


def _masks() -> list[np.ndarray]:
    yy, xx = np.mgrid[:H, :W]
    return [
        (xx - 200) ** 2 / 120**2 + (yy - 150) ** 2 / 70**2 <= 1,  # an ellipse
        (xx >= 480) & (yy >= 300),  # touches the right and bottom edges
        (xx >= 100) & (xx < 106) & (yy >= 400) & (yy < 406),  # 6 x 6: exempt once fed
    ]


def _build(root: Path) -> tuple[Path, list[np.ndarray]]:
    """A one-record build (qwen-vl-grid text written by hand from the masks' boxes)."""
    masks = _masks()
    (root / "images/demo").mkdir(parents=True)
    (root / "records").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / "images/demo/x.png")
    regions, grid = [], []
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        rel = f"masks/demo/x/r_{i:03d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / rel)
        regions.append({"name": f"lesion {i}", "key": f"lesion_{i}", "box": box, "mask": rel, "instance": 0})
        # the [0, 1000) grid by hand: the bins of the first and the last pixel
        bins = (box[0] * 1000 // W, box[1] * 1000 // H, (box[2] - 1) * 1000 // W, (box[3] - 1) * 1000 // H)
        grid.append("<box>({},{}),({},{})</box>".format(*bins))
    conversations = []
    for i in range(3):
        conversations += [
            {
                "from": "human",
                "value": f"Where is the lesion {i}?" if i else "<image>\nWhere is the lesion 0?",
            },
            {"from": "gpt", "value": f"The <ref>lesion {i}</ref>{grid[i]} is here."},
        ]
    record = {
        "id": "demo/x#0",
        "image": "images/demo/x.png",
        "width": W,
        "height": H,
        "dialect": "qwen-vl-grid",
        "split": "train",
        "conversations": conversations,
        "turns": [
            {"task": "rec", "structure": f"lesion {i}", "regions": [i], "negative": False} for i in range(3)
        ],
        "regions": regions,
    }
    (root / "records/shard-00000.jsonl").write_text(json.dumps(record) + "\n")
    return root, masks


def _setting(fmt: str, capped: bool) -> tuple[int, int]:
    if capped:
        return (CAP, LF_DEFAULT[1]) if fmt in ("llamafactory", "sharegpt") else (CAP, SWIFT_DEFAULT[1])
    return LF_DEFAULT if fmt in ("llamafactory", "sharegpt") else SWIFT_DEFAULT


def _scores(rows, masks, square: bool = False) -> tuple[list[float], int]:
    """IoU of each fed box with the best of the masks' fed boxes; boxes under 8 x 8 fed pixels counted apart."""
    ious, exempt = [], 0
    for row in rows:
        truth = [fed_mask_box(m, row.size, square=square) for m in masks]
        for box in row.boxes:
            best = max(range(len(truth)), key=lambda i: box_iou(box, truth[i]) if truth[i] else -1)
            t = truth[best]
            if t[2] - t[0] < 8 or t[3] - t[1] < 8:
                exempt += 1
                continue
            ious.append(box_iou(box, t))
    return ious, exempt


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_dialect_loads_with_right_boxes_at_the_default_and_a_262144_cap(tmp_path, fmt):
    root, masks = _build(tmp_path / "build")
    for dialect in DIALECT_TEXT:
        if fmt == "internvl" and DIALECT_TEXT[dialect][1] == "pixels":  # InternVL feeds its own tiles
            with pytest.raises(ValueError, match="use a relative dialect"):
                export(root, fmt, dest=tmp_path / "refused", dialect=dialect)
            continue
        for capped in (False, True):
            setting = _setting(fmt, capped)
            # the export's pixel budget: the trainer's cap, as the export's printed line asks (default 768*768)
            budget = CAP if capped else LF_DEFAULT[0]
            written = export(
                root, fmt, dest=tmp_path / f"{dialect}-{capped}", dialect=dialect, max_pixels=budget
            )
            rows = load_export(written, fmt, dialect, setting, tmp_path / "hf")
            assert [r.row_id for r in rows] == ["demo/x#0"]  # 100% of rows, ids kept
            ious, exempt = _scores(rows, masks, fmt == "llava" and DIALECT_TEXT[dialect][1] != "pixels")
            assert len(ious) + exempt == 3, (dialect, capped, rows)
            assert min(ious) >= 0.9, (fmt, dialect, capped, ious)


def test_a_lower_cap_than_the_export_moves_qwen25_boxes_and_check_config_says_so(tmp_path, monkeypatch):
    root, masks = _build(tmp_path / "build")
    dest = tmp_path / "lf"
    written = export(root, "llamafactory", dest=dest, dialect="qwen2.5-vl-pixels")
    manifest = json.loads(manifest_path(written).read_text())
    # 700 x 560 within 768 * 768: smart_resize keeps 700 (25 x 28) and 560 (20 x 28)
    assert (
        manifest["requires"]["image_max_pixels"] == 700 * 560 and manifest["largest_image_pixels"] == 392000
    )
    rows = load_export(written, "llamafactory", "qwen2.5-vl-pixels", (CAP, LF_DEFAULT[1]), tmp_path / "hf")
    assert min(_scores(rows, masks)[0]) < 0.5  # the silent failure of the issue

    # the snippet written beside the export is a LLaMA-Factory YAML whose settings keep the boxes right
    snippet = dest / f"{written.stem}.llamafactory.yaml"
    args = yaml.safe_load(snippet.read_text())
    assert args["dataset_dir"] == str(dest.resolve()) and args["dataset"] == written.stem
    assert args["template"] == "qwen2_vl" and args["image_max_pixels"] >= 392000
    assert check_config(snippet) == (
        True,
        [f"{written.stem} (llamafactory, qwen2.5-vl-pixels) under LLaMA-Factory: boxes right"],
    )
    args["image_max_pixels"] = CAP
    capped = tmp_path / "capped.yaml"
    capped.write_text(yaml.safe_dump(args))
    ok, lines = check_config(capped)
    assert not ok and "image_max_pixels 262144 < 392000" in lines[0] and "--max-pixels 262144" in lines[0]
    result = CliRunner().invoke(app, ["export", "--check-config", str(capped)])
    assert result.exit_code == 1 and "BOXES WRONG" in result.stdout
    args.pop("image_max_pixels")  # LLaMA-Factory's default 768 * 768 is enough
    capped.write_text(yaml.safe_dump(args))
    assert check_config(capped)[0]

    # ms-swift: the command snippet, then the same command with MAX_PIXELS=262144
    swift = export(root, "swift", dest=tmp_path / "sw", dialect="qwen2.5-vl-pixels")
    command = (swift.parent / f"{swift.stem}.swift.sh").read_text()
    assert "MAX_PIXELS=392000" in command and f"ROOT_IMAGE_DIR={swift.parent.resolve()}" in command
    assert check_config(swift.parent / f"{swift.stem}.swift.sh")[0]
    low = tmp_path / "low.sh"
    low.write_text(command.replace("MAX_PIXELS=392000", "MAX_PIXELS=262144"))
    ok, lines = check_config(low)
    assert not ok and "MAX_PIXELS 262144 < 392000" in lines[0]
    # swift's objects form: swift rescales the boxes, any MAX_PIXELS works, Qwen's JSON layout needs the env
    objects = export(root, "swift-objects", dest=tmp_path / "so", dialect="qwen2.5-vl-pixels")
    command = (objects.parent / f"{objects.stem}.swift.sh").read_text()
    assert "QWENVL_BBOX_FORMAT=new" in command and "MAX_PIXELS=" not in command
    low.write_text(command.replace("QWENVL_BBOX_FORMAT=new", "MAX_PIXELS=262144"))
    ok, lines = check_config(low)
    assert not ok and "QWENVL_BBOX_FORMAT=new" in lines[0]


def test_grid_dialects_need_no_setting_and_the_cli_prints_the_requirement(tmp_path):
    root, _ = _build(tmp_path / "build")
    result = CliRunner().invoke(
        app,
        [
            "export",
            str(root),
            "--format",
            "llamafactory",
            "--dialect",
            "qwen2.5-vl-pixels",
            "--dest",
            str(tmp_path / "a"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "image_max_pixels / MAX_PIXELS >= 392000" in result.stderr
    result = CliRunner().invoke(
        app,
        [
            "export",
            str(root),
            "--format",
            "llamafactory",
            "--dialect",
            "qwen3-vl-norm1000",
            "--dest",
            str(tmp_path / "b"),
        ],
    )
    assert result.exit_code == 0 and "no pixel setting needed" in result.stderr
    written = tmp_path / "b" / "medground_qwen3-vl-norm1000.jsonl"
    assert json.loads(manifest_path(written).read_text())["requires"] == {}


def test_dest_with_a_dot_is_a_folder_and_files_follow_the_umask(tmp_path):
    root, _ = _build(tmp_path / "build")
    dest = tmp_path / "out" / "qwen2.5-vl"  # a dot but not the format's suffix: a folder
    written = export(root, "llamafactory", dest=dest, dialect="qwen2.5-vl-pixels")
    assert written == dest / "medground_qwen2.5-vl-pixels.jsonl"
    info = json.loads((dest / "dataset_info.json").read_text())
    assert info["medground_qwen2.5-vl-pixels"]["file_name"] == written.name
    assert export(root, "llava", dest=tmp_path / "mine.json") == tmp_path / "mine.json"  # the suffix: a file
    export(root, "internvl", dest=dest)
    export(root, "parquet", dest=tmp_path / "pq")
    umask = os.umask(0)
    os.umask(umask)
    files = [p for p in [*dest.rglob("*"), *(tmp_path / "pq").iterdir()] if p.is_file()]
    assert len(files) >= 10
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert set(modes.values()) == {0o666 & ~umask}, modes
