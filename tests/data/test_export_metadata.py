"""No patient name leaves the engine: image metadata (EXIF, XMP, JPEG comments, PNG text) is dropped from
every image the build copies and every export writes unless asked to keep it, and a DICOM PatientID is
written as a keyed pseudonym (the split still drawn from the ID as read)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from medground.data.api import build_dataset
from medground.data.export import export
from medground.data.records import RecordConfig, split_of
from medground.io import strip_image_metadata

NAME = b"DOE^JOHN"


def _tagged_png(path: Path, array: np.ndarray) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Patient", "DOE^JOHN 4711")
    info.add_itxt("Comment", "DOE^JOHN", zip=True)
    exif = Image.Exif()
    exif[0x013B] = "DOE^JOHN"  # Artist
    Image.fromarray(array).save(path, pnginfo=info, exif=exif.tobytes())


def _tagged_jpeg(path: Path, array: np.ndarray) -> None:
    exif = Image.Exif()
    exif[0x013B] = "DOE^JOHN"
    exif[0x010E] = "DOE^JOHN, MRN 4711"  # ImageDescription
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:creator>DOE^JOHN</dc:creator></x:xmpmeta>'
    Image.fromarray(array).save(path, quality=95, exif=exif.tobytes(), xmp=xmp, comment="DOE^JOHN")


def _dataset(root: Path) -> Path:
    """A 2D dataset (medseg layout) whose PNG and JPEG images name the patient in their metadata."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 255, (64, 80), dtype=np.uint8)
    _tagged_png(root / "images" / "p01_s1.png", grey)
    _tagged_jpeg(root / "images" / "p02_s1.jpg", np.stack([grey] * 3, axis=-1))
    labels = np.zeros((64, 80), np.uint8)
    labels[5:20, 10:30] = 1
    for name in ("p01_s1", "p02_s1"):
        Image.fromarray(labels).save(root / "masks" / f"{name}.png")
    rows = ["image,mask,structure,case", "images/p01_s1.png,masks/p01_s1.png,,p01"]
    rows.append("images/p02_s1.jpg,masks/p02_s1.png,,p02")
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    (root / "labels.json").write_text(json.dumps({"0": "background", "1": "liver"}))
    (root / "meta.json").write_text(json.dumps({"modality": "CT", "body_region": "abdomen"}))
    return root


def _files_naming(folder: Path, needle: bytes) -> list[str]:
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()
    )


def test_strip_keeps_the_pixels_and_drops_every_name(tmp_path):
    array = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    _tagged_png(tmp_path / "a.png", array)
    _tagged_jpeg(tmp_path / "b.jpg", array)
    for path in (tmp_path / "a.png", tmp_path / "b.jpg"):
        assert NAME in path.read_bytes()
        clean = strip_image_metadata(path)
        assert NAME not in clean
        with Image.open(path) as before, Image.open(io.BytesIO(clean)) as after:
            assert np.array_equal(np.asarray(before), np.asarray(after))  # the same pixels, not re-encoded
            assert not after.info.get("exif") and "Patient" not in after.info and "comment" not in after.info


def test_build_and_exports_carry_no_name_unless_kept(tmp_path):
    source = _dataset(tmp_path / "ds")
    out = tmp_path / "out"
    build_dataset([source], out, RecordConfig(), progress=False)
    assert sorted(p.suffix for p in (out / "images").rglob("*.*")) == [
        ".jpg",
        ".png",
    ]  # copied, not re-encoded
    for fmt in ("llamafactory", "swift", "internvl", "parquet", "webdataset"):
        export(out, fmt, dest=tmp_path / "exports" / fmt)
    export(out, "llamafactory", dest=tmp_path / "exports" / "qwen25", dialect="qwen2.5-vl-pixels")
    assert _files_naming(out, NAME) == [] and _files_naming(tmp_path / "exports", NAME) == []

    kept = tmp_path / "kept"
    build_dataset([source], kept, RecordConfig(keep_image_metadata=True), progress=False)
    assert len(_files_naming(kept / "images", NAME)) == 2
    export(kept, "swift", dest=tmp_path / "clean")  # the export drops what the build kept...
    assert _files_naming(tmp_path / "clean", NAME) == []
    export(kept, "swift", dest=tmp_path / "raw", keep_metadata=True)  # ...unless asked to keep it
    assert len(_files_naming(tmp_path / "raw", NAME)) == 2


def test_a_dicom_patient_id_is_pseudonymised_and_the_split_unchanged(tmp_path, shared_data, monkeypatch):
    import pydicom

    monkeypatch.setenv("MEDGROUND_CASE_KEY", "test key")
    case = tmp_path / "dicom" / "case1"
    shutil.copytree(shared_data / "dicom" / "tcia_brain_tumor_progression_mr" / "PGBM-001_1992-04-02", case)
    for path in case.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.PatientID, ds.PatientName = "DOE^JOHN", "DOE^JOHN"
        ds.save_as(path)
    out = tmp_path / "out"
    build_dataset([tmp_path / "dicom"], out, RecordConfig(), progress=False)
    records = [json.loads(line) for p in sorted((out / "records").glob("*.jsonl")) for line in p.open()]
    assert records
    import hashlib
    import hmac

    expected = "pid-" + hmac.new(b"test key", b"DOE^JOHN", hashlib.sha256).hexdigest()[:16]
    assert {r["case"] for r in records} == {expected}
    assert {r["split"] for r in records} == {
        split_of("DOE^JOHN", 0, (0.8, 0.1, 0.1))
    }  # drawn from the ID as read
    export(out, "llamafactory", dest=tmp_path / "lf")
    export(out, "parquet", dest=tmp_path / "pq")
    assert _files_naming(out, NAME) == [] and _files_naming(tmp_path / "lf", NAME) == []
    assert _files_naming(tmp_path / "pq", NAME) == []
    assert _files_naming(out, b"test key") == []  # the key stays out of the outputs


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_files_are_named(tmp_path, suffix):
    from medground.io import ReadError

    path = tmp_path / f"x{suffix}"
    (_tagged_png if suffix == ".png" else _tagged_jpeg)(path, np.zeros((8, 8, 3), np.uint8))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ReadError, match=path.name):
        strip_image_metadata(path)
