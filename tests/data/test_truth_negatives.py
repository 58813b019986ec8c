"""Issue 21, item 1: the reproductions of false negatives ("There is no X" where X is there), kept.

Each builds the smallest input that showed one, by hand, and checks that X is not called absent while
what is known to be absent still is (the expected sets are written out from the fixtures).
"""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from medground.data.api import build_dataset
from medground.data.generators import TaskConfig
from medground.data.knowledge import distant_structures, related
from medground.data.records import RecordConfig, absent_names, resize_sample
from medground.types import Sample, StructureMask

# Every REC turn that can be negative is; many conversations per image, so every absent name gets asked.
NEGATIVES = RecordConfig(
    seed=1, conversations_per_image=12, tasks=TaskConfig(tasks=("rec",), max_turns=6, negative_rate=1.0)
)


def _negatives(out: Path) -> dict[str, set[str]]:
    """image stem -> structures its records call absent."""
    found: dict[str, set[str]] = {}
    for shard in sorted((out / "records").glob("*.jsonl")):
        for line in shard.read_text().splitlines():
            record = json.loads(line)
            turns = record["turns"]
            found.setdefault(Path(record["image"]).stem, set()).update(
                t["structure"] for t in turns if t["negative"]
            )
    return found


def _box(shape: tuple[int, int], box: tuple[int, int, int, int], value: int = 255) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = value
    return mask


def _save(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return str(path)


def _medseg(root: Path, rows: list[tuple[str, str, str, np.ndarray]], meta: dict, size=(64, 64)) -> Path:
    """A medseg folder: ``rows`` of (image path, mask path, structure, mask array); images are grey."""
    lines = ["image,mask,structure"]
    for image, mask, structure, array in rows:
        if not (root / image).exists():
            _save(root / image, np.full(size, 90, np.uint8))
        _save(root / mask, array)
        lines.append(f"{image},{mask},{structure}")
    (root / "pairs.csv").write_text("\n".join(lines) + "\n")
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def _sample(structures: dict[str, np.ndarray], body_region: str, modality: str = "ct") -> Sample:
    """A sample of ``structures`` (name -> bool mask) on a black image of their size."""
    shape = next(iter(structures.values())).shape
    masks = [StructureMask(name, mask) for name, mask in structures.items()]
    return Sample("ds/x", np.zeros(shape, np.uint8), modality, "ds", None, masks, body_region=body_region)


def test_a_tumour_that_resizing_drops_is_still_present():
    # a 3 x 3 tumour in a 1024^2 image: nearest-neighbour resizing to 256 keeps rows and columns 4i + 2
    # (the centres of 4-pixel cells), and this tumour covers 707..709, none of them
    liver = _box((1024, 1024), (100, 100, 600, 600)).astype(bool)
    tumour = _box((1024, 1024), (707, 707, 710, 710)).astype(bool)
    sample = _sample({"liver": liver, "liver tumor": tumour}, "abdomen")
    small = resize_sample(sample, 256)
    assert not next(s for s in small.structures if s.name == "liver tumor").mask.any()  # gone from the pixels
    vocabulary = ["liver", "liver tumor", "spleen"]
    assert absent_names(small, vocabulary) == (["spleen"], "protocol")


def test_a_rejected_mask_leaves_its_structure_unknown(tmp_path):
    good = _box((64, 64), (4, 4, 30, 30))
    short = _box((63, 64), (4, 4, 30, 30))  # one row short: rejected
    root = _medseg(
        tmp_path / "ds",
        [
            ("images/a.png", "masks/a_liver.png", "liver", good),
            ("images/a.png", "masks/a_spleen.png", "spleen", short),
            ("images/b.png", "masks/b_liver.png", "liver", good),
            ("images/b.png", "masks/b_spleen.png", "spleen", _box((64, 64), (40, 40, 60, 60))),
            ("images/c.png", "masks/c_liver.png", "liver", good),
            ("images/c.png", "masks/c_kidney.png", "kidney", _box((64, 64), (40, 40, 60, 60))),
        ],
        {"modality": "ct", "body_region": "abdomen", "cases": "image"},
    )
    build_dataset([root], tmp_path / "out", NEGATIVES, report=False, progress=False)
    # a: its spleen mask was malformed, so only the kidney is known absent; b and c as labelled
    assert _negatives(tmp_path / "out") == {"a": {"kidney"}, "b": {"kidney"}, "c": {"spleen"}}


def _coco(root: Path, categories: list[str], annotations: list[tuple[str, str, object]], meta: dict) -> Path:
    """A COCO file: ``annotations`` of (image file, category, segmentation or None for box-only)."""
    names = sorted({image for image, _, _ in annotations})
    images = []
    for number, name in enumerate(names, 1):
        _save(root / "images" / name, np.full((40, 40), 80, np.uint8))
        images.append({"id": number, "file_name": name, "width": 40, "height": 40})
    ids = {c: i for i, c in enumerate(categories, 1)}
    entries = []
    for number, (image, category, segmentation) in enumerate(annotations, 1):
        entry = {"id": number, "image_id": names.index(image) + 1, "category_id": ids[category]}
        entry.update({"segmentation": segmentation, "iscrowd": 0} if segmentation else {"bbox": [1, 1, 5, 5]})
        entries.append(entry)
    data = {
        "images": images,
        "annotations": entries,
        "categories": [{"id": i, "name": c} for c, i in ids.items()],
    }
    (root / "instances.json").write_text(json.dumps(data))
    (root / "meta.json").write_text(json.dumps({"modality": "endoscopy", "cases": "image", **meta}))
    return root / "instances.json"


SQUARE = [[5, 5, 25, 5, 25, 25, 5, 25]]


def test_coco_placeholder_categories_are_not_labelled(tmp_path):
    path = _coco(
        tmp_path / "coco",
        ["polyp", "teeth", "ulcer"],
        [("a.png", "polyp", SQUARE), ("b.png", "ulcer", SQUARE), ("b.png", "polyp", None)],
        {},
    )
    build_dataset([f"coco:{path}"], tmp_path / "out", NEGATIVES, report=False, progress=False)
    # nobody annotated "teeth": never absent; b's polyp has a box but no mask: not absent from b
    assert _negatives(tmp_path / "out") == {"a": {"ulcer"}, "b": set()}


def test_coco_meta_json_lists_what_is_labelled(tmp_path):
    path = _coco(
        tmp_path / "coco",
        ["polyp", "teeth", "ulcer"],
        [("a.png", "polyp", SQUARE), ("b.png", "ulcer", SQUARE)],
        {"labelled": ["polyp"]},
    )
    build_dataset([f"coco:{path}"], tmp_path / "out", NEGATIVES, report=False, progress=False)
    assert _negatives(tmp_path / "out") == {"a": set(), "b": {"polyp"}}


def _sa_med2d(root: Path, images: dict[str, dict[str, tuple[int, int, int, int]]], meta: dict) -> Path:
    """An SA-Med2D-20M folder of 64 x 64 slices: image stem -> {structure: its box}."""
    index = {}
    for stem, structures in images.items():
        _save(root / "data" / "images" / f"{stem}.png", np.full((64, 64), 90, np.uint8))
        masks = []
        for structure, box in structures.items():
            name = f"data/masks/{stem}_{structure}_000.png"
            _save(root / name, _box((64, 64), box))
            masks.append(name)
        index[f"data/images/{stem}.png"] = masks
    (root / "image2label_train.json").write_text(json.dumps(index))
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def test_sa_med2d_protocols_are_per_sub_dataset_and_modality(tmp_path):
    liver, spleen = (4, 4, 20, 40), (24, 4, 40, 40)
    # CHAOS labels the liver in CT and liver + spleen in MR
    root = _sa_med2d(
        tmp_path / "samed",
        {
            "ct_00--CHAOS--c1--x_0040": {"liver": liver},
            "mr_00--CHAOS--c2--x_0040": {"liver": liver, "spleen": spleen},
            "mr_00--CHAOS--c3--x_0040": {"liver": liver},
        },
        {"body_region": "abdomen"},
    )
    build_dataset([root], tmp_path / "out", NEGATIVES, report=False, progress=False)
    found = _negatives(tmp_path / "out")
    assert found["ct_00--CHAOS--c1--x_0040"] & {"spleen"} == set()  # CT does not label the spleen
    assert found["mr_00--CHAOS--c3--x_0040"] == {"spleen"}  # MR does


def test_sa_med2d_small_structures_are_never_absent(tmp_path):
    # SA-Med2D removed masks under 0.153% of the image: a 3 x 3 adrenal gland (0.22% of 64^2) is only
    # just above it, so an image without one may hold one, filtered out; a 30 x 30 liver (22%) may not
    liver, adrenal = (4, 4, 34, 34), (50, 50, 53, 53)
    root = _sa_med2d(
        tmp_path / "samed",
        {
            "ct_00--AMOS--c1--x_0010": {"liver": liver, "adrenal_gland_left": adrenal},
            "ct_00--AMOS--c2--x_0010": {"liver": liver},
            "ct_00--AMOS--c3--x_0010": {"adrenal_gland_left": adrenal},
        },
        {},  # no body region: no distant-anatomy negatives
    )
    build_dataset([root], tmp_path / "out", NEGATIVES, report=False, progress=False)
    assert _negatives(tmp_path / "out") == {
        "ct_00--AMOS--c1--x_0010": set(),
        "ct_00--AMOS--c2--x_0010": set(),
        "ct_00--AMOS--c3--x_0010": {"liver"},
    }


def test_whole_body_and_fetal_anatomy_is_never_distant():
    for region in ("abdomen", "pelvis", "knee", "neck", "brain"):
        assert "lymph node" not in distant_structures(region, kind="anatomy"), region
        assert "blood vessel" not in distant_structures(region, kind="anatomy"), region
    for region in ("obstetric", "fetal head", "fetus"):
        assert distant_structures(region, kind="anatomy") == [], region
    fetal = _sample({"fetal head": _box((64, 64), (4, 4, 40, 40)).astype(bool)}, "obstetric", "ultrasound")
    assert absent_names(fetal, None) == ([], None)  # no "no brain", "no skull", "no cerebellum"


def test_regions_that_share_an_image_share_it_both_ways():
    # fetal anatomy (region "fetus", neighbour of the abdomen) is not distant from an abdominal image,
    # as abdominal anatomy is not distant from a fetal one
    assert "placenta" not in distant_structures("abdomen", kind="anatomy")
    assert "placenta" in distant_structures("brain", kind="anatomy")
    # a knee (lower limb) borders the pelvis, and the pelvis the knee
    assert "urinary bladder" not in distant_structures("knee", kind="anatomy")
    assert "patella" not in distant_structures("pelvis", kind="anatomy")


def test_plurals_are_related_to_their_parts():
    assert related("kidneys", "left kidney") and related("left kidney", "kidneys")
    assert related("ribs", "rib_left_1")
    assert related("polyps", "polyp")
    assert not related("kidneys", "spleen")
    kidney, rib = _box((64, 64), (4, 4, 20, 20)), _box((64, 64), (30, 30, 40, 40))
    sample = _sample({"kidney_left": kidney.astype(bool), "rib_left_1": rib.astype(bool)}, "abdomen")
    assert absent_names(sample, ["kidneys", "ribs", "liver"]) == (["liver"], "protocol")


def test_slices_numbered_in_case_folders_know_their_neighbours(tmp_path):
    root = _medseg(
        tmp_path / "ds",
        [
            (
                "images/case_07/0004.png",
                "masks/case_07/0004_liver.png",
                "liver",
                _box((64, 64), (4, 4, 30, 30)),
            ),
            (
                "images/case_07/0005.png",
                "masks/case_07/0005_spleen.png",
                "spleen",
                _box((64, 64), (4, 4, 30, 30)),
            ),
            (
                "images/case_08/0001.png",
                "masks/case_08/0001_liver.png",
                "liver",
                _box((64, 64), (4, 4, 30, 30)),
            ),
        ],
        {"modality": "ct", "cases": "image"},  # no body region: no distant-anatomy negatives
    )
    build_dataset([root], tmp_path / "out", NEGATIVES, report=False, progress=False)
    # 0004 and 0005 are neighbouring slices of case_07: each one's structure is labelled next door;
    # case_08's only slice has no neighbour labelling the spleen
    expected = {"case_07__0004": set(), "case_07__0005": set(), "case_08__0001": {"spleen"}}
    assert _negatives(tmp_path / "out") == expected
