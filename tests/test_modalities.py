import pytest

from medground.modalities import (
    BIRD_FILE_PREFIX,
    DISPLAY_NAMES,
    MEDGRIT_MODALITIES,
    MODALITIES,
    bird_prefix,
    canonical_modality,
    display_name,
    image_phrase,
    is_known_modality,
    medgrit_modality,
    modality_from_sa_med2d_name,
    normalise_modality,
    plane_from_sa_med2d_name,
)

ALIASES = [
    ("mri", "mr"),
    ("MR", "mr"),
    ("MRI", "mr"),
    ("mr_t1", "mr"),
    ("mr_flair", "mr"),
    ("ct", "ct"),
    ("CT", "ct"),
    ("x_ray", "x-ray"),
    ("xray", "x-ray"),
    ("X-ray", "x-ray"),
    ("x", "x-ray"),
    ("cxr", "x-ray"),
    ("us", "ultrasound"),
    ("ultrasound", "ultrasound"),
    ("endo", "endoscopy"),
    ("colonoscopy", "endoscopy"),
    ("derm", "dermoscopy"),
    ("fundus photography", "fundus"),
    ("Fundus_Photography", "fundus"),
    ("pathology", "histopathology"),
    ("wsi", "histopathology"),
    ("PT", "pet"),
    ("pet", "pet"),
    ("microscopy", "microscopy"),
    ("other", "other"),
    ("Color fundus photography", "fundus"),
    ("MR FLAIR (z-scored within brain)", "mr"),
    ("CT (head and neck, downsampled to 128^3)", "ct"),
]


@pytest.mark.parametrize(("raw", "expected"), ALIASES)
def test_canonical_aliases(raw, expected):
    assert canonical_modality(raw) == expected


def test_vocabulary_is_canonical_and_displayed():
    assert MODALITIES == (
        "ct",
        "mr",
        "x-ray",
        "pet",
        "endoscopy",
        "dermoscopy",
        "fundus",
        "ultrasound",
        "histopathology",
        "microscopy",
        "photography",
        "oct",
        "mammography",
        "other",
    )
    for modality in MODALITIES:
        assert canonical_modality(modality) == modality
        assert DISPLAY_NAMES[modality]
    assert display_name("mr") == "MRI" and display_name("ct") == "CT" and display_name("x_ray") == "X-ray"


def test_unknown_modality_lists_vocabulary_and_closest():
    with pytest.raises(ValueError) as error:
        canonical_modality("ultrasonnd")
    message = str(error.value)
    assert "histopathology" in message and "ultrasound" in message and "closest" in message
    with pytest.raises(ValueError, match="expected one of"):
        canonical_modality("banana bread")


def test_medgrit_and_bird_prefixes():
    assert MEDGRIT_MODALITIES == (
        "ct",
        "mr",
        "x-ray",
        "pet",
        "endoscopy",
        "dermoscopy",
        "fundus",
        "ultrasound",
    )
    assert [BIRD_FILE_PREFIX[m] for m in MEDGRIT_MODALITIES] == [
        "ct",
        "mr",
        "x",
        "pet",
        "endoscopy",
        "dermoscopy",
        "fundus",
        "ultrasound",
    ]
    assert bird_prefix("xray") == "x"
    assert bird_prefix("mammography") == "x"  # as medground.modalities.medgrit_modality counts it
    with pytest.raises(ValueError, match="Med-GRIT"):
        bird_prefix("histopathology")


@pytest.mark.parametrize(
    ("name", "modality", "plane"),
    [
        ("ct_00--AbdomenCT1K--Case_00220--x_0359.png", "ct", "axial"),
        ("mr_t1--BraTS2021--BraTS2021_00218--z_0141.png", "mr", "sagittal"),
        ("mr_00--ACDC--patient001_frame01--x_0006.png", "mr", "axial"),
        ("ct_00--MSD_Liver--liver_123--y_0175.png", "ct", "coronal"),
        ("x_ray--covid_19_ct_cxr--16660_5_1--2d_none.png", "x-ray", None),
        ("pet_00--autoPET--case_1--y_0100.png", "pet", "coronal"),
        ("endoscopy_00--Kvasir--cju0qkwl35piu0993l0dewei2--2d_none.png", "endoscopy", None),
        ("dermoscopy_00--ISIC2018--ISIC_0000000--2d_none.png", "dermoscopy", None),
        ("fundus_photography--DRIVE--21_training--2d_none.png", "fundus", None),
        ("ultrasound_00--BUSI--benign_1--2d_none.png", "ultrasound", None),
        ("images/ct_00--CAD_PE--001--x_0125--0000_002.png", "ct", "axial"),
    ],
)
def test_sa_med2d_names(name, modality, plane):
    assert modality_from_sa_med2d_name(name) == modality
    assert plane_from_sa_med2d_name(name) == plane


def test_sa_med2d_names_without_convention():
    assert modality_from_sa_med2d_name("amos_0004_75.png") is None
    assert plane_from_sa_med2d_name("s0619_32.png") is None
    # an unknown prefix is kept (open vocabulary), without its sub-modality
    assert modality_from_sa_med2d_name("banana_00--Set--case--x_0001.png") == "banana"
    assert modality_from_sa_med2d_name("oct_00--OCTA500--case--2d_none.png") == "oct"


def test_image_phrase_articles():
    assert image_phrase("mr") == "an MRI image"
    assert image_phrase("ct", "axial") == "an axial CT image"
    assert image_phrase("ct", "coronal") == "a coronal CT image"
    assert image_phrase("x-ray") == "an X-ray image"
    assert image_phrase("ultrasound") == "an ultrasound image"
    assert image_phrase("fundus") == "a fundus photograph"


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("photography", "photography"),
        ("Clinical photo", "photography"),
        ("photograph", "photography"),
        ("OCT", "oct"),
        ("optical coherence tomography", "oct"),
        ("Mammography", "mammography"),
        ("MG", "mammography"),
        ("MRI", "mr"),
        ("Thermography (infrared camera)", "thermography"),
        ("  Capillaroscopy ", "capillaroscopy"),
    ],
)
def test_open_vocabulary_keeps_what_a_dataset_states(raw, kept):
    assert normalise_modality(raw) == kept
    assert is_known_modality(raw) == (kept in MODALITIES)


def test_unknown_modality_reads_as_a_sentence():
    assert image_phrase("thermography") == "a thermography image"
    assert image_phrase("oct", "axial") == "an axial OCT image"
    assert image_phrase("photography") == "a clinical photograph"
    assert display_name("thermography") == "thermography"
    with pytest.raises(ValueError, match="empty"):
        normalise_modality(" ( ) ")


def test_bird_mapping_counts_the_rest_as_other():
    # BiRD's eight keep their names; mammography is an X-ray technique; the rest is "other"
    assert [medgrit_modality(m) for m in MEDGRIT_MODALITIES] == list(MEDGRIT_MODALITIES)
    assert medgrit_modality("mammography") == "x-ray"
    assert {medgrit_modality(m) for m in ("photography", "oct", "histopathology", "thermography")} == {
        "other"
    }
