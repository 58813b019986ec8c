import csv
import json

import pytest

from medground.data.names import clean_name, is_plural, name_key, ordinal, the_name

# Hand-written: every structure name of /work/shared/data (medseg pairs.csv and labels.json, medvol
# labels.json and pairs.csv label values, the DICOM tumor mask) and common dataset spellings.
PAIRS = {
    # sa_med2d_demo_ct
    "aorta": "aorta",
    "inferior_vena_cava": "inferior vena cava",
    "liver": "liver",
    "spleen": "spleen",
    "autochthon_left": "left autochthonous back muscle",
    "autochthon_right": "right autochthonous back muscle",
    "heart_atrium_left": "left atrium",
    "heart_atrium_right": "right atrium",
    "heart_myocardium": "myocardium",
    "heart_ventricle_left": "left ventricle",
    "heart_ventricle_right": "right ventricle",
    "lung_lower_lobe_left": "left lower lobe of the lung",
    "lung_lower_lobe_right": "right lower lobe of the lung",
    "lung_middle_lobe_right": "right middle lobe of the lung",
    "lung_upper_lobe_left": "left upper lobe of the lung",
    "rib_left_9": "left 9th rib",
    "rib_right_9": "right 9th rib",
    "vertebrae_T9": "T9 vertebra",
    "colon": "colon",
    "femur_right": "right femur",
    "gluteus_maximus_left": "left gluteus maximus",
    "gluteus_maximus_right": "right gluteus maximus",
    "hip_left": "left hip",
    "hip_right": "right hip",
    # other medseg datasets (pairs.csv and labels.json wording)
    "peritumoral edema": "peritumoral edema",
    "peritumoral edema (BraTS label ED, as extracted by SAM-Med3D)": "peritumoral edema",
    "ground_glass_opacity": "ground-glass opacity",
    "consolidation": "consolidation",
    "cell nuclei (instance label map)": "cell nuclei",
    "dental caries": "dental caries",
    "dental caries (decay)": "dental caries",
    "retinal vessels": "retinal vessels",
    "retinal blood vessels (1st manual observer)": "retinal blood vessels",
    "fetal head": "fetal head",
    "fetal head (skull ellipse, filled)": "fetal head",
    "polyp": "polyp",
    "skin lesion": "skin lesion",
    "both lungs": "both lungs",
    "lung fields (both lungs)": "lung fields",
    # medvol
    "necrosis": "necrosis",
    "edema": "edema",
    "non-enhancing tumor": "non-enhancing tumor",
    "enhancing tumor": "enhancing tumor",
    "spinal cord": "spinal cord",
    "spinal cord gray matter": "spinal cord gray matter",
    "Brainstem": "brainstem",
    "SpinalCord": "spinal cord",
    "RightParotid": "right parotid gland",
    "LeftParotid": "left parotid gland",
    "Esophagus": "esophagus",
    "Larynx": "larynx",
    "Mandible": "mandible",
    "PTV56 (planning target volume, 56 Gy)": "56 Gy planning target volume",
    "PTV70 (planning target volume, 70 Gy)": "70 Gy planning target volume",
    # DICOM tumor mask series and other spellings
    "Mask_Tumor": "tumor",
    "kidney_L": "left kidney",
    "left_kidney": "left kidney",
    "Kidney (L)": "left kidney",
    "Kidney (R)": "right kidney",
    "vertebrae_L5": "L5 vertebra",
    "vertebrae_C1": "C1 vertebra",
    "rib_left_1": "left 1st rib",
    "rib_right_12": "right 12th rib",
    "clavicula_left": "left clavicle",
    "iliac_vena_right": "right iliac vein",
    "adrenal_gland_left": "left adrenal gland",
    "postcava": "inferior vena cava",
    "urinary_bladder": "urinary bladder",
}


@pytest.mark.parametrize(("raw", "expected"), sorted(PAIRS.items()))
def test_clean_name(raw, expected):
    assert clean_name(raw) == expected


def test_clean_name_is_idempotent():
    for expected in PAIRS.values():
        assert clean_name(expected) == expected


def test_every_shared_structure_name_is_in_the_hand_table(shared_data):
    found = set()
    for pairs in sorted((shared_data / "medseg").glob("*/pairs.csv")):
        with pairs.open(newline="") as handle:
            found.update(row["structure"] for row in csv.DictReader(handle))
    labels = json.loads((shared_data / "medseg" / "sa_med2d_demo_ct" / "labels.json").read_text())
    found.update(labels["structures"])
    for path in sorted((shared_data / "medvol").glob("*/labels.json")):
        data = json.loads(path.read_text())
        tables = [data[k] for k in ("oars", "targets") if k in data] or [data]
        for table in tables:
            found.update(v for k, v in table.items() if k.isdigit() and k != "0" and "pairs.csv" not in v)
    missing = sorted(found - set(PAIRS))
    assert not missing, f"structure names without a hand-written expected clean name: {missing}"


def test_name_key_orders_sides_and_ignores_spelling():
    assert (
        name_key("lower lobe of the left lung")
        == name_key("lung_lower_lobe_left")
        == "left lower lobe of the lung"
    )
    assert name_key("Kidney (L)") == name_key("kidney_L") == name_key("left kidney") == "left kidney"
    assert name_key("ground-glass opacity") == name_key("ground_glass_opacity") == "ground glass opacity"
    assert name_key("vertebrae_T9") == "t9 vertebra"
    assert name_key("left hip") != name_key("right hip")


def test_empty_name_raises():
    with pytest.raises(ValueError, match="empty"):
        clean_name(" (note only) ")


def test_grammar_helpers():
    assert is_plural("both lungs") and is_plural("cell nuclei") and is_plural("retinal vessels")
    assert not is_plural("pancreas") and not is_plural("left hip") and not is_plural("esophagus")
    assert the_name("liver") == "the liver" and the_name("both lungs") == "both lungs"
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101)] == [
        "1st",
        "2nd",
        "3rd",
        "4th",
        "11th",
        "12th",
        "13th",
        "21st",
        "22nd",
        "101st",
    ]
