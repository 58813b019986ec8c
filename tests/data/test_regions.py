import numpy as np
import pytest

from medground.data.regions import RegionConfig, extract_regions, position_phrase, relation_phrase
from medground.types import Box, Region, StructureMask


def _mask(shape, *boxes):
    mask = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


def test_components_become_instances_with_tight_boxes_in_raster_order():
    mask = _mask((100, 100), (60, 10, 80, 30), (5, 50, 25, 90))  # top-right piece first in raster order
    regions, dropped = extract_regions(
        [StructureMask("hip_left", mask)], {"hip_left": "left hip"}, False, RegionConfig()
    )
    assert [r.box for r in regions] == [Box(60, 10, 80, 30), Box(5, 50, 25, 90)]
    assert regions[1].mask.shape == (40, 20) and regions[1].mask.all()
    assert np.array_equal(regions[0].full_mask(100, 100) | regions[1].full_mask(100, 100), mask)
    assert [r.instance for r in regions] == [0, 1]
    assert [r.area for r in regions] == [400, 800]
    assert all(r.name == "left hip" and r.key == "hip_left" for r in regions)
    assert dropped == []


def test_specks_under_the_sa_med2d_fraction_are_dropped():
    # 100x100 image: 0.153% of 10,000 px = 15.3 -> components need >= 16 px
    mask = _mask((100, 100), (0, 0, 4, 4), (50, 50, 53, 55))  # 16 px kept, 15 px dropped
    regions, _ = extract_regions([StructureMask("a", mask)], {"a": "a"}, False, RegionConfig())
    assert [r.box for r in regions] == [Box(0, 0, 4, 4)]


def test_structure_with_only_specks_is_reported_dropped():
    mask = _mask((100, 100), (0, 0, 2, 2))
    regions, dropped = extract_regions([StructureMask("tiny", mask)], {"tiny": "tiny"}, False, RegionConfig())
    assert regions == [] and dropped == ["tiny"]


def test_diagonal_pixels_join_with_8_connectivity_only():
    mask = np.zeros((200, 200), bool)
    mask[10:40, 10:40] = True
    mask[40:70, 40:70] = True  # touches the first square at one corner
    eight, _ = extract_regions([StructureMask("a", mask)], {"a": "a"}, False, RegionConfig(connectivity=2))
    four, _ = extract_regions([StructureMask("a", mask)], {"a": "a"}, False, RegionConfig(connectivity=1))
    assert [r.box for r in eight] == [Box(10, 10, 70, 70)]
    assert [r.box for r in four] == [Box(10, 10, 40, 40), Box(40, 40, 70, 70)]


def test_instance_maps_keep_small_annotated_instances():
    ids = np.zeros((500, 500), np.uint16)
    ids[0:4, 0:4] = 7  # 16 px: below 0.153% of the image, kept as an annotated instance
    ids[100:103, 100:103] = 3  # 9 px: below min_instance_pixels=10
    regions, _ = extract_regions(
        [StructureMask("nuclei", ids, instance_map=True)], {"nuclei": "nucleus"}, False, RegionConfig()
    )
    assert [r.box for r in regions] == [Box(0, 0, 4, 4)]


def test_without_splitting_one_region_spans_all_pieces():
    mask = _mask((100, 100), (0, 0, 10, 10), (90, 90, 100, 100))
    regions, _ = extract_regions(
        [StructureMask("lungs", mask)], {"lungs": "lungs"}, False, RegionConfig(split_components=False)
    )
    assert [r.box for r in regions] == [Box(0, 0, 100, 100)]


@pytest.mark.parametrize(
    ("center", "radiological", "expected"),
    [
        ((10, 10), False, "in the upper left part of the image"),
        ((50, 50), True, "in the centre of the image"),
        ((90, 50), False, "on the right side of the image"),
        (
            (10, 90),
            True,
            "in the lower left part of the image (the patient's right side in radiological view)",
        ),
        ((10, 90), False, "in the lower left part of the image"),
        ((50, 95), True, "in the lower central part of the image"),
    ],
)
def test_position_words(center, radiological, expected):
    assert position_phrase(center, 100, 100, radiological) == expected


def _region(box):
    return Region("r", "r", box, np.zeros((1, 1), bool), 0, box.area)


def test_relations_by_hand():
    left_top, right_bottom = _region(Box(0, 0, 10, 10)), _region(Box(50, 50, 60, 60))
    assert relation_phrase(left_top, right_bottom) == "above and to the left of"
    assert relation_phrase(right_bottom, left_top) == "below and to the right of"
    assert relation_phrase(_region(Box(20, 20, 30, 30)), _region(Box(0, 0, 100, 100))) == "inside the box of"
    assert relation_phrase(_region(Box(0, 0, 10, 10)), _region(Box(1, 0, 11, 10))) == "overlapping"
