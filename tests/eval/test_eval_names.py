"""Canonical structure names and whole-word class matching."""

import pytest

from medground.eval.names import canonical_name, class_mentioned


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
