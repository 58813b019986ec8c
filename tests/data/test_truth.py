"""Issue 9: negatives only where absence is known, patients never across splits, modality as stated.

Expected negatives and keys are written out by hand from the fixtures' file names and label sets.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medground.data.api import build_dataset
from medground.data.generators import TaskConfig
from medground.data.records import RecordConfig, absent_names, make_records, split_of
from medground.data.sources import Item, open_source
from medground.names import clean_name
from medground.types import Sample, StructureMask

# Every REC turn that can be negative is; many phrasings per image, so every absent name gets asked.
NEGATIVES = RecordConfig(
    seed=1, conversations_per_image=12, tasks=TaskConfig(tasks=("rec",), max_turns=6, negative_rate=1.0)
)


def _records(out: Path) -> list[dict]:
    return [
        json.loads(line)
        for f in sorted((out / "records").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]


def _negatives(records: list[dict]) -> dict[str, set[str]]:
    """image stem -> structures its records call absent."""
    found: dict[str, set[str]] = {}
    for record in records:
        stem = Path(record["image"]).stem
        found.setdefault(stem, set()).update(t["structure"] for t in record["turns"] if t["negative"])
    return found


def _box_mask(size: int, box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 255
    return mask


def _sa_med2d(root: Path, images: dict[str, list[str]], body_region: str = "abdomen and chest") -> Path:
    """A fake SA-Med2D-20M collection: ``images`` maps an image stem to its structures (one box each)."""
    (root / "data" / "images").mkdir(parents=True)
    (root / "data" / "masks").mkdir()
    index = {}
    for stem, structures in images.items():
        Image.fromarray(np.full((64, 64), 90, np.uint8)).save(root / "data" / "images" / f"{stem}.png")
        masks = []
        for i, structure in enumerate(structures):
            name = f"{stem}_{structure}_000.png"
            Image.fromarray(_box_mask(64, (4 + 6 * i, 4, 10 + 6 * i, 40))).save(
                root / "data" / "masks" / name
            )
            masks.append(f"data/masks/{name}")
        index[f"data/images/{stem}.png"] = masks
    (root / "image2label_train.json").write_text(json.dumps(index))
    (root / "meta.json").write_text(json.dumps({"body_region": body_region}))
    return root


def test_mixed_protocol_sa_med2d_build_has_no_false_negative(tmp_path):
    root = _sa_med2d(
        tmp_path / "samed",
        {
            "ct_00--AMOS--case1--z_0031": ["liver", "spleen"],
            "ct_00--AMOS--case2--z_0050": ["liver", "aorta", "kidney_left"],
            "ct_00--TotalSeg--s0114--z_0010": ["heart_myocardium", "lung_lower_lobe_left"],
            "ct_00--TotalSeg--s0114--z_0012": ["heart_myocardium", "lung_upper_lobe_left"],
            "ct_00--TotalSeg--s0200--z_0100": ["heart_myocardium", "heart_atrium_left", "rib_left_9"],
        },
    )
    out = tmp_path / "out"
    manifest = build_dataset([root], out, NEGATIVES, report=False, progress=False)
    # by hand: the AMOS label set {liver, spleen, aorta, left kidney} minus what the image shows; the
    # TotalSeg set minus what the image and its neighbour 2 slices away label (s0114 z10 <-> z12)
    expected = {
        "ct_00--AMOS--case1--z_0031": {"aorta", "left kidney"},
        "ct_00--AMOS--case2--z_0050": {"spleen"},
        "ct_00--TotalSeg--s0114--z_0010": {"left atrium", "left 9th rib"},
        "ct_00--TotalSeg--s0114--z_0012": {"left atrium", "left 9th rib"},
        "ct_00--TotalSeg--s0200--z_0100": {"left lower lobe of the lung", "left upper lobe of the lung"},
    }
    assert _negatives(_records(out)) == expected
    assert manifest["counts"]["negatives_by_rule"] == {"protocol": manifest["counts"]["negatives"]}


def test_shared_sa_med2d_demo_never_calls_a_totalsegmentator_structure_absent_from_amos(shared_data):
    root = shared_data / "medseg" / "sa_med2d_demo_ct"
    totalseg = {clean_name(m.split("_", 2)[2].rsplit("_", 1)[0]) for m in _demo_masks(root, "s0")}
    for spec in (str(root), f"sa-med2d:{root}"):  # the folder's medseg layout and its SA-Med2D index
        source = open_source(spec)
        # the demo's names (amos_0004_75, s0114_111) do not say their sub-dataset: no protocol is known
        assert source.protocols() == {}
        for item in source.items():
            for sample in source.load(item):
                absent, rule = absent_names(sample, None)
                assert rule in ("distant", None)
                assert not set(absent) & totalseg, (item.key, set(absent) & totalseg)
                assert not {"liver", "spleen", "aorta", "heart", "left lung"} & set(absent)


def _demo_masks(root: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in (root / "masks").glob(f"{prefix}*.png"))


def _sample(structures: dict[str, np.ndarray], nearby=(), body_region="abdomen") -> Sample:
    return Sample(
        "ds/x",
        np.zeros((100, 100), np.uint8),
        "ct",
        "ds",
        None,
        [StructureMask(name, mask) for name, mask in structures.items()],
        body_region=body_region,
        meta={"nearby": list(nearby)},
    )


def test_parent_child_and_specks_are_never_absent():
    big = _box_mask(100, (10, 10, 40, 40)).astype(bool)
    speck = np.zeros((100, 100), bool)
    speck[70, 70] = speck[70, 71] = True  # 2 px: under the 0.153% speck threshold (16 px)
    vocabulary = ["kidney", "kidney_left", "kidney_right", "liver", "spleen", "heart", "heart_atrium_left"]
    sample = _sample({"kidney_left": big, "spleen": speck, "heart_atrium_left": big})
    absent, rule = absent_names(sample, vocabulary)
    # not "kidney" (contains the left kidney), not "heart" (contains the left atrium), not the speck spleen
    assert (absent, rule) == (["liver", "right kidney"], "protocol")
    records, regions, _ = make_records(sample, vocabulary, NEGATIVES)
    assert {r.key for r in regions} == {"kidney_left", "heart_atrium_left"}  # the speck gives no region
    asked = {t["structure"] for rec in records for t in rec["turns"] if t["negative"]}
    assert asked == {"liver", "right kidney"}
    # a child is not absent beside its parent either, and neither is what a neighbouring slice labels
    sample = _sample({"lung": big}, nearby=["liver"])
    assert absent_names(sample, ["lung", "lung_lower_lobe_left", "liver", "spleen"]) == (
        ["spleen"],
        "protocol",
    )


def test_unknown_protocol_gives_only_distant_anatomy():
    big = _box_mask(100, (10, 10, 40, 40)).astype(bool)
    absent, rule = absent_names(_sample({"liver": big}, body_region="brain"), None)
    assert rule == "distant" and "liver" not in absent and "spleen" in absent
    assert "brain" not in absent and "left eye" not in absent  # same or neighbouring region: maybe visible


def _medseg(root: Path, stems: list[str], meta: dict, case_column: dict[str, str] | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = ["image,mask,structure" + (",case" if case_column else "")]
    for i, stem in enumerate(stems):
        Image.fromarray(np.full((48, 48), 100 + i, np.uint8)).save(root / "images" / f"{stem}.png")
        Image.fromarray(_box_mask(48, (5, 5, 30, 30))).save(root / "masks" / f"{stem}_lesion.png")
        row = f"images/{stem}.png,masks/{stem}_lesion.png,lesion"
        rows.append(row + (f",{case_column[stem]}" if case_column else ""))
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def test_unknown_patients_all_go_to_train_with_one_warning(tmp_path):
    root = _medseg(
        tmp_path / "slices_ds", [f"img_{i:03d}" for i in range(12)], {"modality": "ct", "cases": "unknown"}
    )
    with pytest.warns(UserWarning, match="slices_ds: the patients of 12 of its items are unknown") as caught:
        manifest = build_dataset([root], tmp_path / "out", RecordConfig(seed=0), report=False, progress=False)
    assert sum("slices_ds" in str(w.message) for w in caught) == 1
    records = _records(tmp_path / "out")
    assert {r["split"] for r in records} == {"train"} and {r["case"] for r in records} == {None}
    assert manifest["counts"]["unknown_patient_images"] == {"slices_ds": 12}
    assert any("slices_ds" in w for w in manifest["warnings"])


def test_cases_image_gives_each_image_its_own_patient(tmp_path):
    stems = [f"img_{i:03d}" for i in range(30)]
    root = _medseg(tmp_path / "own", stems, {"modality": "ct", "cases": "image"})
    config = RecordConfig(seed=0, split_ratios=(0.4, 0.3, 0.3))
    build_dataset([root], tmp_path / "out", config, report=False, progress=False)
    records = _records(tmp_path / "out")
    assert sorted(r["case"] for r in records) == [f"own/{s}" for s in stems]
    assert {r["split"] for r in records} == {"train", "val", "test"}  # 30 patients: all three splits drawn


def test_case_column_and_namespace(tmp_path):
    stems = ["a1", "a2", "b1"]
    root = _medseg(
        tmp_path / "ns",
        stems,
        {"modality": "ct", "case_namespace": "siteA"},
        {"a1": "P1", "a2": "P1", "b1": "P2"},
    )
    items = {i.key: i.case for i in open_source(root).items() if isinstance(i, Item)}
    assert items == {"a1": "siteA:P1", "a2": "siteA:P1", "b1": "siteA:P2"}


@pytest.mark.parametrize("cases", ["image", "unknown"])
def test_a_stated_case_column_wins_over_the_meta_policy(tmp_path, cases):
    """meta.json "cases" speaks for images whose patient nobody stated; a case column is a statement."""
    root = _medseg(
        tmp_path / f"stated_{cases}",
        ["a1", "a2", "b1"],
        {"modality": "ct", "cases": cases},
        {"a1": "P1", "a2": "P1", "b1": ""},
    )
    items = {i.key: i.case for i in open_source(root).items() if isinstance(i, Item)}
    own = f"stated_{cases}/b1" if cases == "image" else None
    assert items == {"a1": "P1", "a2": "P1", "b1": own}


def test_sa_med2d_sequences_of_one_subject_are_one_patient(tmp_path):
    root = _sa_med2d(
        tmp_path / "seq",
        {
            "mr_t1--BraTS2021--BraTS2021_00001--z_0042": ["edema"],
            "mr_flair--BraTS2021--BraTS2021_00001--z_0042": ["edema"],
            "mr_t2--BraTS2021--BraTS2021_00002--z_0042": ["edema"],
        },
        body_region="brain",
    )
    cases = {i.key: i.case for i in open_source(root).items()}
    assert cases == {
        "mr_t1--BraTS2021--BraTS2021_00001--z_0042": "BraTS2021--BraTS2021_00001",
        "mr_flair--BraTS2021--BraTS2021_00001--z_0042": "BraTS2021--BraTS2021_00001",
        "mr_t2--BraTS2021--BraTS2021_00002--z_0042": "BraTS2021--BraTS2021_00002",
    }


def test_one_patient_through_two_sources_lands_in_one_split(shared_data, tmp_path):
    slices = shared_data / "medseg" / "brats2021_flair_mr"  # BraTS2021_01646 as 8 PNG slices
    volume = shared_data / "medvol" / "brats2021_sammed3d_mr"  # the same patient's FLAIR volume
    out = tmp_path / "out"
    for seed in range(4):  # whatever split the seed draws, both sources agree
        build_dataset(
            [slices, volume], out, RecordConfig(seed=seed), report=False, progress=False, overwrite=True
        )
        records = _records(out)
        assert {r["source"] for r in records} == {"brats2021_flair_mr", "brats2021_sammed3d_mr"}
        assert {r["case"] for r in records} == {"BraTS2021_01646"}
        assert len({r["split"] for r in records}) == 1


def test_split_is_a_function_of_the_patient_alone():
    ratios = (0.5, 0.25, 0.25)
    assert split_of(None, 0, ratios) == "train"
    splits = {split_of(f"patient{i}", 7, ratios) for i in range(40)}
    assert splits == {"train", "val", "test"}


def test_modality_option_fills_in_only_and_reports_conflicts(tmp_path):
    root = _medseg(tmp_path / "stated", ["a_1"], {"modality": "CT", "cases": "image"})
    source = open_source(root, modality="mr")
    assert source.modality == "ct"
    assert any("'CT'" in w and "'mr'" in w for w in source.warnings)
    bare = _medseg(tmp_path / "bare", ["a_1"], {"cases": "image"})
    filled = open_source(bare, modality="mr")
    assert filled.modality == "mr" and not filled.warnings


def test_unknown_modality_is_kept_described_and_warned(tmp_path):
    root = _medseg(tmp_path / "thermo", ["t_1", "t_2"], {"modality": "Thermography", "cases": "image"})
    config = RecordConfig(
        seed=0, conversations_per_image=4, tasks=TaskConfig(tasks=("mia",), max_turns=1, mia_rate=1.0)
    )
    with pytest.warns(UserWarning, match="'thermography'.*not in the known vocabulary"):
        manifest = build_dataset([root], tmp_path / "out", config, report=False, progress=False)
    records = _records(tmp_path / "out")
    assert manifest["counts"]["modalities"] == {"thermography": len(records)} and records
    answers = [c["value"] for r in records for c in r["conversations"] if c["from"] == "gpt"]
    assert all("thermography image" in a for a in answers)


def test_tissue_tiles_get_no_distant_negatives_and_no_image_gets_cell_negatives():
    big = _box_mask(100, (10, 10, 40, 40)).astype(bool)
    tile = _sample({"gland": big}, body_region="colon")
    tile.modality = "histopathology"
    assert absent_names(tile, None) == ([], None)  # a colon biopsy tile is colon: no organ is "absent"
    ct = _sample({"liver": big}, body_region="abdomen")
    absent, _ = absent_names(ct, None)
    assert not {"cell", "cell nuclei", "mitochondria", "gland"} & set(absent)  # cells are in every organ
