import csv
import json
import re
from importlib import resources

import pytest

from medground.data.knowledge import (
    BODY_REGIONS,
    KINDS,
    canonical_body_region,
    describe,
    distant_structures,
    lineage,
    load_table,
    lookup,
    related,
    related_structures,
)
from medground.names import name_key

# TotalSegmentator v1's 104 classes, written out by hand (independent of the table's generator).
TOTALSEGMENTATOR = (
    "spleen kidney_right kidney_left gallbladder liver stomach aorta inferior_vena_cava "
    "portal_vein_and_splenic_vein pancreas adrenal_gland_right adrenal_gland_left lung_upper_lobe_left "
    "lung_lower_lobe_left lung_upper_lobe_right lung_middle_lobe_right lung_lower_lobe_right "
    + " ".join(
        f"vertebrae_{v}"
        for v in ["L5", "L4", "L3", "L2", "L1"]
        + [f"T{i}" for i in range(12, 0, -1)]
        + [f"C{i}" for i in range(7, 0, -1)]
    )
    + " esophagus trachea heart_myocardium heart_atrium_left heart_ventricle_left heart_atrium_right "
    "heart_ventricle_right pulmonary_artery brain iliac_artery_left iliac_artery_right iliac_vena_left "
    "iliac_vena_right small_bowel duodenum colon "
    + " ".join(f"rib_{s}_{i}" for s in ("left", "right") for i in range(1, 13))
    + " humerus_left humerus_right scapula_left scapula_right clavicula_left clavicula_right femur_left "
    "femur_right hip_left hip_right sacrum face gluteus_maximus_left gluteus_maximus_right "
    "gluteus_medius_left gluteus_medius_right gluteus_minimus_left gluteus_minimus_right autochthon_left "
    "autochthon_right iliopsoas_left iliopsoas_right urinary_bladder"
).split()

OTHER_SOURCES = [
    # AMOS, BraTS, KiTS/LiTS/MSD, HaN, fundus, dermoscopy, endoscopy, ultrasound, DICOM
    "postcava",
    "prostate/uterus",
    "bladder",
    "necrotic_tumor_core",
    "whole_tumor",
    "tumor_core",
    "kidney_tumor",
    "kidney_cyst",
    "liver_tumor",
    "hepatic_vessel",
    "pancreatic_tumor",
    "lung_tumor",
    "prostate_peripheral_zone",
    "prostate_transition_zone",
    "anterior_hippocampus",
    "optic_chiasm",
    "optic_nerve_left",
    "eye_right",
    "lens_left",
    "cochlea_right",
    "submandibular_gland_left",
    "thyroid_gland",
    "optic_disc",
    "optic_cup",
    "skin_lesion",
    "polyp",
    "fetal_head",
    "breast_lesion",
    "thyroid_nodule",
    "covid_lesion",
    "lung_left",
    "lung_right",
    "tooth",
    "Mask_Tumor",
    "Liver",
    "gland",
]


def test_table_size_and_unique_keys():
    text = resources.files("medground.data").joinpath("knowledge/anatomy.json").read_text(encoding="utf-8")
    duplicates: list[str] = []

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        duplicates.extend(k for k in set(keys) if keys.count(k) > 1)
        return dict(pairs)

    json.loads(text, object_pairs_hook=no_duplicates)
    assert not duplicates
    assert len(load_table()) >= 200


def test_entries_are_complete_and_consistent():
    for key, entry in load_table().items():
        assert key == entry.key == name_key(entry.name), key
        for value in (entry.name, entry.body_region, entry.system, entry.description):
            assert isinstance(value, str) and value.strip(), key
        assert entry.body_region in BODY_REGIONS, (key, entry.body_region)
        assert entry.kind in KINDS, (key, entry.kind)
        assert entry.description.endswith("."), key
        assert not re.search(r"\.\s+[A-Z]", entry.description), f"{key}: more than one sentence"


def test_aliases_never_point_at_another_entry():
    table = load_table()
    for key, entry in table.items():
        for alias in entry.aliases:
            alias_key = name_key(alias)
            assert alias_key not in table or alias_key == key, (key, alias)
            assert lookup(alias).key == key, (key, alias)


@pytest.mark.parametrize("raw", TOTALSEGMENTATOR + OTHER_SOURCES)
def test_dataset_classes_resolve(raw):
    assert lookup(raw) is not None, raw


def test_totalsegmentator_list_is_complete():
    assert len(TOTALSEGMENTATOR) == 104 and len(set(TOTALSEGMENTATOR)) == 104


def test_every_shared_structure_resolves(shared_data):
    names = set()
    for pairs in sorted((shared_data / "medseg").glob("*/pairs.csv")):
        with pairs.open(newline="") as handle:
            # a label map's row may list its classes ("nerve; blood vessel"): each is a structure
            names.update(n.strip() for row in csv.DictReader(handle) for n in row["structure"].split(";"))
    for path in sorted((shared_data / "medvol").glob("*/labels.json")):
        data = json.loads(path.read_text())
        for table in [data[k] for k in ("oars", "targets") if k in data] or [data]:
            names.update(v for k, v in table.items() if k.isdigit() and k != "0" and "pairs.csv" not in v)
    for path in sorted((shared_data / "medvol").glob("*/pairs.csv")):
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                names.update(
                    p.split("=", 1)[1] for p in row["label_values"].split(",") if "=" in p and p[0] != "0"
                )
    names.add("Mask_Tumor")
    missing = sorted(n for n in names if lookup(n) is None)
    assert not missing, missing


def test_kinds_of_known_structures():
    for lesion in (
        "polyp",
        "peritumoral edema",
        "ground_glass_opacity",
        "dental caries",
        "lung nodule",
        "kidney_tumor",
        "skin lesion",
        "enhancing tumor",
    ):
        assert lookup(lesion).kind == "lesion", lesion
    for organ in ("liver", "hip_left", "cell nuclei", "both lungs", "retinal vessels", "fetal head"):
        assert lookup(organ).kind == "anatomy", organ
    assert lookup("PTV56").kind == "target"


def test_lookup_and_describe():
    assert lookup("hip_left").name == "left hip"
    assert lookup("left hip").key == "left hip"
    assert lookup("postcava").name == "inferior vena cava"
    assert lookup("not a structure at all") is None
    assert lookup("") is None
    assert describe("liver").startswith("The liver")
    assert describe("no such thing") == ""


def test_related_structures():
    pelvis = related_structures("pelvis")
    assert "left hip" in pelvis and "sacrum" in pelvis and "liver" not in pelvis
    assert pelvis == sorted(pelvis)
    assert "heart" in related_structures("thorax")
    assert "polyp" in related_structures("abdomen", kind="lesion")
    assert "liver" not in related_structures("abdomen", kind="lesion")
    assert canonical_body_region("Head_and_Neck") == "neck"
    with pytest.raises(ValueError, match="known"):
        related_structures("elbowland")
    with pytest.raises(ValueError, match="kind"):
        related_structures("chest", kind="organ")


def test_distant_structures_are_safe_negatives():
    chest = distant_structures("chest")
    assert "fetal head" in chest and "optic disc" in chest and "left femur" in chest
    for near in (
        "heart",
        "liver",
        "T9 vertebra",
        "left lower lobe of the lung",
        "thyroid gland",
        "skeletal muscle",
    ):
        assert near not in chest, near
    mixed = distant_structures("abdomen, thorax and pelvis")
    assert (
        "optic disc" in mixed
        and "liver" not in mixed
        and "left hip" not in mixed
        and "left femur" not in mixed
    )
    assert distant_structures(None) == [] and distant_structures("somewhere odd") == []
    assert distant_structures("whole body") == []
    assert "polyp" in distant_structures(
        "eye", kind="lesion"
    ) and "retinal vessels" not in distant_structures("eye")


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        ("kidney_left", "kidney"),  # laterality, derived
        ("lung_lower_lobe_left", "left lung"),  # the table's parent
        ("lung_lower_lobe_left", "lungs"),  # ... and its parent in turn, by alias
        ("heart_atrium_left", "heart"),
        ("enhancing tumor", "tumor core"),
        ("enhancing tumor", "whole tumor"),
        ("vertebrae_T9", "vertebra"),
        ("rib_left_9", "rib"),  # a parent that is no entry itself
        ("left widget", "widget"),  # unknown to the table: laterality still holds
    ],
)
def test_hierarchy_knows_what_is_part_of_what(child, parent):
    assert name_key(parent) in lineage(child) or lookup(parent).key in lineage(child)
    assert related(child, parent) and related(parent, child)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("kidney_left", "kidney_right"),
        ("liver", "spleen"),
        ("heart_atrium_left", "heart_myocardium"),
        ("", "liver"),
    ],
)
def test_siblings_and_strangers_are_not_related(a, b):
    assert not related(a, b)


def test_shared_multiclass_label_map_gives_one_structure_per_value(shared_data):
    from medground.data.sources import Item, open_source
    from medground.types import Sample

    source = open_source(shared_data / "medseg" / "usgra_nerve_vessel_ultrasound")
    item = next(i for i in source.items() if isinstance(i, Item) and i.key == "0000")
    sample = next(s for s in source.load(item) if isinstance(s, Sample))
    # pairs.csv summarises the map as "nerve; blood vessel"; labels.json names value 1 and value 2
    assert sorted(s.name for s in sample.structures) == [
        "blood vessel (artery or vein)",
        "nerve (peripheral nerve / plexus)",
    ]
