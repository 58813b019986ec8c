"""medground.names: display names, comparison keys, the one plural table, synonyms, the ICL compatibility text."""

import csv
import json
import re

import pytest

from medground.data.knowledge import lookup
from medground.names import (
    canonical_name,
    class_mentioned,
    clean_name,
    icl_key,
    is_plural,
    mention_words,
    name_key,
    ordinal,
    plural,
    singular,
    the_name,
)

# Hand-written expected display names: the structure names of /work/shared/data when this table was written
# and common dataset spellings. Names added to the shared data later are checked by a rule instead
# (test_every_shared_structure_name_cleans_to_a_known_structure), not by growing this table.
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
    # medseg datasets added later (pairs.csv structure columns and labels.json values)
    "Barrett's oesophagus (BE)": "barrett's oesophagus",  # flaw kept as built: the eponym loses its capital
    "cancer": "cancer",
    "high-grade dysplasia (HGD)": "high-grade dysplasia",
    "suspicious area": "suspicious area",
    "cell nuclei (instances)": "cell nuclei",
    "foot ulcer (wound)": "foot ulcer",
    "foot ulcer (wound area)": "foot ulcer",
    "hippocampus anterior (head)": "hippocampus anterior",
    "hippocampus posterior (body and tail)": "hippocampus posterior",
    "intestinal gland": "intestinal gland",
    "lung tumour": "lung tumour",
    "lung tumour (primary non-small-cell lung cancer)": "lung tumour",
    "nerve": "nerve",
    "nerve (peripheral nerve / plexus)": "nerve",
    "blood vessel": "blood vessel",
    "blood vessel (artery or vein)": "blood vessel",
    "optic disc": "optic disc",
}


@pytest.mark.parametrize(("raw", "expected"), sorted(PAIRS.items()))
def test_clean_name(raw, expected):
    assert clean_name(raw) == expected


def test_clean_name_is_idempotent():
    for expected in PAIRS.values():
        assert clean_name(expected) == expected


def _shared_structure_names(shared_data) -> set[str]:
    """Every structure name of the shared collection: medseg pairs.csv and labels.json, medvol labels.json."""
    found = set()
    for pairs in sorted((shared_data / "medseg").glob("*/pairs.csv")):
        with pairs.open(newline="") as handle:
            # a multi-class label map's row lists its structures joined by "; "
            found.update(s.strip() for row in csv.DictReader(handle) for s in row["structure"].split(";"))
    for path in sorted((shared_data / "medseg").glob("*/labels.json")):
        data = json.loads(path.read_text())
        found.update(data.get("structures", ()))
        found.update(v for k, v in data.items() if k.isdigit() and k != "0")
    for path in sorted((shared_data / "medvol").glob("*/labels.json")):
        data = json.loads(path.read_text())
        for table in [data[k] for k in ("oars", "targets") if k in data] or [data]:
            found.update(v for k, v in table.items() if k.isdigit() and k != "0")
    return {v for v in found if "pairs.csv" not in v}


def test_every_shared_structure_name_cleans_to_a_known_structure(shared_data):
    """A rule every name of the shared data satisfies, whatever dataset is added: its clean name is final
    (cleaning it again changes nothing), has no key punctuation left, and names the same knowledge-table
    structure as the raw name (the data engine writes the clean name into records and looks it up)."""
    names = _shared_structure_names(shared_data)
    assert len(names) > 50  # the collection was read, not skipped by a changed layout
    broken = {}
    for raw in sorted(names):
        clean = clean_name(raw)
        entry = lookup(raw)
        if clean_name(clean) != clean or re.search(r"[_()]|\s{2}", clean) or clean != clean.strip():
            broken[raw] = f"{clean!r} is not a final display name"
        elif entry is None:
            broken[raw] = "not in the knowledge table (add an entry or alias to data/knowledge/anatomy.json)"
        elif lookup(clean) != entry:
            broken[raw] = f"cleaning changes the structure: {entry.key!r} -> {clean!r}"
    assert not broken, broken


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


# ---- the strict protocol's canonical names (formerly medground.eval.names) ----


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("hip_left", "left hip"),
        ("Kidneys", "kidney"),
        ("arteries", "artery"),
        ("vertebrae", "vertebra"),
        ("pancreas", "pancreas"),
        ("Right_Lung", "right lung"),
        ("left-adrenal-glands", "left adrenal gland"),
        ("sinuses", "sinus"),
        ("gland_adrenal_right", "right gland adrenal"),
        # one comparison rule with name_key: a leading "the" goes, both sides are kept, left first
        ("the liver", "liver"),
        ("right and left kidneys", "left right and kidney"),
    ],
)
def test_canonical_name(raw, canonical):
    assert canonical_name(raw) == canonical


def test_class_mentioned():
    assert class_mentioned("hip_left", "hip_left")
    assert class_mentioned("hip_left", "The LEFT HIP.")
    assert class_mentioned("left hip", "the left femoral head")  # synonym
    assert not class_mentioned("liver", "deliver")
    assert not class_mentioned("left hip", "right hip")
    # singular and plural of an irregular word are one class (the old eval table left "nuclei" alone)
    assert class_mentioned("cell nuclei", "It shows a cell nucleus.")


def test_mention_words_keep_text_order():
    assert mention_words("The RIGHT kidneys, left-lung") == ["the", "right", "kidney", "left", "lung"]


# ---- one plural table: where the data engine's and the evaluator's tables used to disagree ----

# word -> (singular, is the word plural?), by hand from an English dictionary
NUMBER = {
    "kidneys": ("kidney", True),  # data said singular ("ys" excluded), eval folded it
    "airways": ("airway", True),  # a knowledge-table name; data said singular
    "vertebrae": ("vertebra", True),  # data said singular (no final s), eval folded it
    "nuclei": ("nucleus", True),  # data said plural, eval left "nuclei" unfolded
    "alveoli": ("alveolus", True),  # same
    "caries": ("caries", True),  # eval made it "cary"; plural-only, kept as is
    "lens": ("lens", False),  # eval made it "len"
    "pons": ("pons", False),  # eval made it "pon"
    "lenses": ("lens", True),
    "teeth": ("tooth", True),
    "bronchi": ("bronchus", True),
    "metastases": ("metastasis", True),
    "arteries": ("artery", True),
    "sinuses": ("sinus", True),
    "masses": ("mass", True),
    "vessels": ("vessel", True),
    "pancreas": ("pancreas", False),
    "pelvis": ("pelvis", False),
    "thalamus": ("thalamus", False),
    "iliopsoas": ("iliopsoas", False),
    "glass": ("glass", False),
    "liver": ("liver", False),
}


@pytest.mark.parametrize(("word", "expected"), sorted(NUMBER.items()))
def test_singular_and_is_plural_read_one_table(word, expected):
    one, plural = expected
    assert singular(word) == one
    assert is_plural(word) is plural
    assert is_plural(f"left {word}") is plural  # the last word decides
    assert canonical_name(word) == one


# singular name -> plural, by hand from an English dictionary
PLURALS = {
    "cell nucleus": "cell nuclei",
    "left kidney": "left kidneys",
    "T9 vertebra": "T9 vertebrae",
    "artery": "arteries",
    "airway": "airways",  # a vowel before y: just s
    "sinus": "sinuses",
    "lens": "lenses",
    "thyroid nodule": "thyroid nodules",
    "right 9th rib": "right 9th ribs",
    "left lower lobe of the lung": "left lower lobes of the lung",  # the head noun, not the last word
    "Polyp": "Polyps",
    "metastasis": "metastases",
    "tooth": "teeth",
}


@pytest.mark.parametrize(("one", "many"), sorted(PLURALS.items()))
def test_plural_and_singular_read_one_table(one, many):
    assert plural(one) == many
    assert is_plural(many)
    assert plural(many) == many  # already plural: unchanged
    if " of " not in one:
        assert canonical_name(many) == canonical_name(one)  # the strict protocol folds them back


def test_plural_leaves_plural_names_alone():
    for name in ("cell nuclei", "dental caries", "both lungs", "retinal vessels", ""):
        assert plural(name) == name


def test_names_as_the_engine_writes_them():
    assert is_plural("dental caries") and is_plural("both lungs") and is_plural("lung fields")
    assert not is_plural("left lens") and not is_plural("T9 vertebra")
    assert canonical_name("dental caries") == "dental caries"
    assert canonical_name("cell nuclei") == canonical_name("cell nucleus") == "cell nucleus"


# ---- the in-context segmenter's text (compatibility with the shipped RidgeSeg weights) ----

# The 61 training tasks of src/medground/icl/weights/meta.json (weights of 2026-12-01) -> the text the
# in-context segmenter embeds for them: the structure's display name, written by hand. The weights were
# trained with an older rule for the 27 tasks whose spelling differs ("leftparotid", "ptv56", "hip left",
# "ground glass opacity", ...): that rule glued CamelCase keys into non-words.
SHIPPED_TEXTS = {
    "brats2015_deepmedic_mr/edema": "edema",
    "brats2015_deepmedic_mr/enhancing": "enhancing",
    "brats2015_deepmedic_mr/necrosis": "necrosis",
    "brats2015_deepmedic_mr/non-enhancing": "non-enhancing",
    "brats2021_flair_mr/peritumoral_edema": "peritumoral edema",
    "brats2021_sammed3d_mr/edema": "edema",
    "covid19_medseg_ct/consolidation": "consolidation",
    "covid19_medseg_ct/ground_glass_opacity": "ground-glass opacity",
    "cpm15_nuclei_histopathology/cell_nuclei": "cell nuclei",
    "dc1000_dental_xray/dental_caries": "dental caries",
    "edd2020_endoscopy_disease/Barrett's_oesophagus": "barrett's oesophagus",
    "edd2020_endoscopy_disease/cancer": "cancer",
    "edd2020_endoscopy_disease/high-grade_dysplasia": "high-grade dysplasia",
    "edd2020_endoscopy_disease/polyp": "polyp",
    "edd2020_endoscopy_disease/suspicious_area": "suspicious area",
    "fuseg_wound_photo/foot_ulcer": "foot ulcer",
    "glas_colon_glands_histopathology/intestinal_gland": "intestinal gland",
    "idrid_fundus_optic_disc/optic_disc": "optic disc",
    "kvasir_seg_endoscopy/polyp": "polyp",
    "monuseg_nuclei_histopathology/cell_nuclei": "cell nuclei",
    "msd_hippocampus_mr/hippocampus_anterior": "hippocampus anterior",
    "msd_hippocampus_mr/hippocampus_posterior": "hippocampus posterior",
    "msd_lung_tumour_ct_patches/lung_tumour": "lung tumour",
    "openkbp_headneck_ct/Brainstem": "brainstem",
    "openkbp_headneck_ct/Esophagus": "esophagus",
    "openkbp_headneck_ct/Larynx": "larynx",
    "openkbp_headneck_ct/LeftParotid": "left parotid gland",
    "openkbp_headneck_ct/Mandible": "mandible",
    "openkbp_headneck_ct/PTV56": "56 Gy planning target volume",
    "openkbp_headneck_ct/PTV70": "70 Gy planning target volume",
    "openkbp_headneck_ct/RightParotid": "right parotid gland",
    "openkbp_headneck_ct/SpinalCord": "spinal cord",
    "sa_med2d_demo_ct/aorta": "aorta",
    "sa_med2d_demo_ct/autochthon_left": "left autochthonous back muscle",
    "sa_med2d_demo_ct/autochthon_right": "right autochthonous back muscle",
    "sa_med2d_demo_ct/colon": "colon",
    "sa_med2d_demo_ct/femur_right": "right femur",
    "sa_med2d_demo_ct/gluteus_maximus_left": "left gluteus maximus",
    "sa_med2d_demo_ct/gluteus_maximus_right": "right gluteus maximus",
    "sa_med2d_demo_ct/heart_atrium_left": "left atrium",
    "sa_med2d_demo_ct/heart_atrium_right": "right atrium",
    "sa_med2d_demo_ct/heart_myocardium": "myocardium",
    "sa_med2d_demo_ct/heart_ventricle_left": "left ventricle",
    "sa_med2d_demo_ct/heart_ventricle_right": "right ventricle",
    "sa_med2d_demo_ct/hip_left": "left hip",
    "sa_med2d_demo_ct/hip_right": "right hip",
    "sa_med2d_demo_ct/inferior_vena_cava": "inferior vena cava",
    "sa_med2d_demo_ct/liver": "liver",
    "sa_med2d_demo_ct/lung_lower_lobe_left": "left lower lobe of the lung",
    "sa_med2d_demo_ct/lung_lower_lobe_right": "right lower lobe of the lung",
    "sa_med2d_demo_ct/lung_middle_lobe_right": "right middle lobe of the lung",
    "sa_med2d_demo_ct/lung_upper_lobe_left": "left upper lobe of the lung",
    "sa_med2d_demo_ct/rib_left_9": "left 9th rib",
    "sa_med2d_demo_ct/rib_right_9": "right 9th rib",
    "sa_med2d_demo_ct/spleen": "spleen",
    "sa_med2d_demo_ct/vertebrae_T9": "T9 vertebra",
    "sct_spinalcord_mr/spinal_cord": "spinal cord",
    "sct_spinalcord_mr/spinal_cord_gray_matter": "spinal cord gray matter",
    "shenzhen_cxr_lung_xray/both_lungs": "both lungs",
    "usgra_nerve_vessel_ultrasound/blood_vessel": "blood vessel",
    "usgra_nerve_vessel_ultrasound/nerve": "nerve",
}


def test_icl_prompt_text_is_the_display_name():
    assert clean_name("hip_left") == "left hip"
    assert clean_name("SpinalCord") == "spinal cord"
    assert clean_name("PTV70") == "70 Gy planning target volume"
    # a parenthesised note is dropped, as the ICL source loader's key drops it
    assert clean_name("peritumoral edema (BraTS label ED, as extracted by SAM-Med3D)") == "peritumoral edema"
    # the data engine writes the display name into its records: reading it back changes nothing
    assert clean_name("left parotid gland") == "left parotid gland"
    assert clean_name("T9 vertebra") == "T9 vertebra"
    assert icl_key("cell nuclei (instance label map)") == "cell_nuclei"
    assert icl_key("vertebrae_T9") == "vertebrae_T9"


def test_icl_prompt_text_of_every_shipped_training_task():
    from medground.icl.segmenter import DEFAULT_WEIGHTS

    tasks = json.loads((DEFAULT_WEIGHTS / "meta.json").read_text())["tasks"]
    assert sorted(tasks) == sorted(SHIPPED_TEXTS)
    for task, text in SHIPPED_TEXTS.items():
        key = task.split("/", 1)[1]
        assert icl_key(key) == key and clean_name(key) == text, task


def test_icl_loader_gives_the_display_names_of_the_real_structures(shared_data):
    from medground.icl.targets import targets_from_source

    sources = sorted({t.split("/", 1)[0] for t in SHIPPED_TEXTS})
    found = {}
    for source in sources:
        folder = next(
            shared_data / c / source for c in ("medseg", "medvol") if (shared_data / c / source).is_dir()
        )
        found.update({t.name: t.text for t in targets_from_source(folder, 8).tasks})
    assert found == SHIPPED_TEXTS
