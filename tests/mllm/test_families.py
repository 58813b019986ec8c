import pytest

from medground.grounding import get_dialect
from medground.mllm.families import FAMILIES, family_for_model_type, get_family
from medground.types import Box


def test_registry_has_three_families_with_their_dialects():
    assert sorted(FAMILIES) == ["qwen2-vl", "qwen2.5-vl", "qwen3-vl"]
    assert get_family("qwen3-vl").factor == 32
    assert get_family("qwen2-vl").factor == 28
    assert family_for_model_type("qwen2_5_vl").name == "qwen2.5-vl"


def test_unknown_family_lists_known_names_and_closest():
    with pytest.raises(KeyError, match=r"known: qwen2-vl, qwen2.5-vl, qwen3-vl.*'qwen2-vl'"):
        get_family("qwen2vl")
    with pytest.raises(KeyError, match="qwen2_vl"):
        family_for_model_type("llava")


def test_classes_resolve_lazily():
    family = get_family("qwen2.5-vl")
    assert family.config_cls().__name__ == "Qwen2_5_VLConfig"
    assert family.model_cls().__name__ == "Qwen2_5_VLForConditionalGeneration"


def test_qwen25_dialect_follows_the_processor_resize():
    # 100 x 60 image, max 56*56 pixels: smart_resize(60, 100, 28) -> round to (56, 112) = 6272 > 3136,
    # beta = sqrt(6000 / 3136) = 1.3832; h = floor(60/1.3832/28)*28 = 28, w = floor(100/1.3832/28)*28 = 56.
    dialect = get_family("qwen2.5-vl").dialect(28 * 28, 56 * 56)
    assert dialect.box(Box(0, 0, 50, 30), 100, 60) == '{"bbox_2d": [0, 0, 28, 14]}'
    # The grid dialects do not depend on the resize.
    assert get_family("qwen3-vl").dialect(1, 2) is get_dialect("qwen3-vl-norm1000")
