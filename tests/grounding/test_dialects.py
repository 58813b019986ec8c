import json
import math
import re

import pytest

from medground.grounding import DEPRECATED_NAMES, DIALECTS, Grounded, get_dialect, reground_text, smart_resize
from medground.types import Box


def test_qwen_vl_serialises_on_the_1000_grid_by_hand():
    d = get_dialect("qwen-vl-grid")
    # 200 x 100 image: x bin = floor(x * 5), y bin = floor(y * 10); end uses the last pixel (x1 - 1)
    text = d.ground("liver", [Box(10, 20, 51, 41)], 200, 100)
    assert text == "<ref>liver</ref><box>(50,200),(250,400)</box>"


def test_full_image_box_ends_at_999_on_a_1000_wide_image():
    d = get_dialect("qwen-vl-grid")
    assert d.box(Box(0, 0, 1000, 2000), 1000, 2000) == "<box>(0,0),(999,999)</box>"


def test_qwen2_vl_uses_special_tokens_and_box_edges():
    d = get_dialect("qwen2-vl-norm1000")
    # edges: round(x * 1000 / w); the exclusive edge 100 of a 100-px side is 1000 (Qwen's own conversion)
    text = d.ground("spleen", [Box(0, 0, 100, 100)], 100, 100)
    assert text == "<|object_ref_start|>spleen<|object_ref_end|><|box_start|>(0,0),(1000,1000)<|box_end|>"
    assert d.parse(text, 100, 100)[0].box == Box(0, 0, 100, 100)
    # 200 x 100, box [20, 10, 60, 50): 20*5 = 100, 10*10 = 100, 60*5 = 300, 50*10 = 500
    assert d.box(Box(20, 10, 60, 50), 200, 100) == "<|box_start|>(100,100),(300,500)<|box_end|>"


def _qwen2vl_format(box, h, w):
    """Qwen's ``convert_to_qwen2vl_format`` (QwenLM/Qwen3-VL qwen-vl-finetune/tools/process_bbox.ipynb at
    96588727), written again here from its text: round(v / size * 1000), clipped to [0, 1000]."""
    x1, y1, x2, y2 = box
    return [max(0, min(round(v / s * 1000), 1000)) for v, s in ((x1, w), (y1, h), (x2, w), (y2, h))]


@pytest.mark.parametrize("name", ["qwen2-vl-norm1000", "qwen3-vl-norm1000", "internvl-norm1000"])
def test_qwen2_qwen3_internvl_numbers_are_qwens_own_conversion(name):
    d = get_dialect(name)
    # the notebook's own example: COCO box [146, 137, 615, 415] of a 640 x 428 image
    for box, (w, h) in [
        ((146, 137, 615, 415), (640, 428)),
        ((0, 0, 640, 428), (640, 428)),
        ((3, 5, 7, 9), (33, 21)),
    ]:
        text = d.box(Box(*box), w, h)
        assert [
            int(n)
            for n in re.findall(r"\b\d+\b", text.replace("<|box_start|>", "").replace("<|box_end|>", ""))
        ] == (_qwen2vl_format(box, h, w))


@pytest.mark.parametrize("name", list(DIALECTS))
@pytest.mark.parametrize("size", [(160, 160), (577, 738), (999, 64), (37, 900)])
def test_box_text_box_is_exact_for_sides_up_to_1000(name, size):
    d = get_dialect(name)
    w, h = size
    boxes = [Box(0, 0, w, h), Box(1, 2, 3, 4), Box(w // 3, h // 4, w - 1, h - 2), Box(w - 1, h - 1, w, h)]
    # qwen2.5-vl counts pixels of the resized input: exact only where that input is not smaller
    rh, rw = smart_resize(h, w)
    slack = 0
    if name == "qwen2.5-vl-pixels":
        slack = max(0, round(h / rh + 0.5) - 1, round(w / rw + 0.5) - 1)
    if name == "llava-1.5-square":  # two decimals of the padded square: steps of max(w, h) / 100 px
        slack = math.ceil(max(w, h) / 200 + 0.5)
    for box in boxes:
        parsed = d.parse(d.ground("x", [box], w, h), w, h)
        assert len(parsed) == 1 and parsed[0].label == "x"
        got = parsed[0].box
        error = max(abs(a - b) for a, b in zip(got.as_list(), box.as_list(), strict=True))
        assert error <= slack, (name, size, box, got)


_TEXT = {
    "qwen-vl-grid": "<box>({},{}),({},{})</box>",
    "qwen2-vl-norm1000": "<|box_start|>({},{}),({},{})<|box_end|>",
    "qwen3-vl-norm1000": '{{"bbox_2d": [{}, {}, {}, {}]}}',
    "internvl-norm1000": "<box>[[{}, {}, {}, {}]]</box>",
    "florence-2-loc": "<loc_{}><loc_{}><loc_{}><loc_{}>",
}


@pytest.mark.parametrize("name", sorted(_TEXT))
def test_text_box_text_is_exact_for_large_images(name):
    d = get_dialect(name)
    w, h = 2943, 1435
    for coords in [(0, 0, 999, 999), (123, 456, 789, 998), (500, 1, 501, 2)]:
        text = _TEXT[name].format(*coords)
        box = d.parse(text, w, h)[0].box
        assert d.box(box, w, h) == text


def test_qwen25_uses_pixels_of_the_resized_input():
    d = get_dialect("qwen2.5-vl-pixels")
    # 1000 x 500 image -> smart_resize(500, 1000) = (504, 1008): x scale 1.008, y scale 1.008
    assert smart_resize(500, 1000) == (504, 1008)
    text = d.ground("lesion", [Box(100, 50, 300, 250)], 1000, 500)
    assert json.loads(text) == {"bbox_2d": [101, 50, 302, 252], "label": "lesion"}
    assert d.parse(text, 1000, 500)[0].box == Box(100, 50, 300, 250)


def test_json_dialect_groups_several_boxes_in_a_list():
    d = get_dialect("qwen3-vl-norm1000")
    text = d.ground("hip", [Box(0, 0, 10, 10), Box(50, 50, 100, 100)], 100, 100)
    items = json.loads(text)
    assert [i["bbox_2d"] for i in items] == [[0, 0, 100, 100], [500, 500, 1000, 1000]]
    assert [g.box for g in d.parse("The hips: " + text, 100, 100)] == [
        Box(0, 0, 10, 10),
        Box(50, 50, 100, 100),
    ]


def test_parse_ignores_garbage_and_orders_swapped_corners():
    d = get_dialect("qwen-vl-grid")
    assert d.parse("no box here <box>(1,2)</box>", 100, 100) == []
    assert d.parse("<box>(500,500),(100,100)</box>", 100, 100)[0].box == Box(10, 10, 51, 51)


def test_smart_resize_matches_transformers():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as reference

    for h, w in [(512, 512), (181, 258), (1435, 2943), (30, 800), (4000, 3000)]:
        assert smart_resize(h, w) == reference(
            h, w, factor=28, min_pixels=56 * 56, max_pixels=14 * 14 * 4 * 1280
        )


def test_unknown_dialect_names_the_closest():
    with pytest.raises(KeyError, match="qwen2-vl-norm1000"):
        get_dialect("qwen2-vl-norm100")


def test_old_names_read_as_they_were_written():
    # medground's qwen2-vl of before: last-pixel bins, a 100-px side ends at 990; qwen2-vl-norm1000 ends at 1000
    with pytest.warns(DeprecationWarning):
        old = get_dialect("qwen2-vl")
    assert old.box(Box(0, 0, 100, 100), 100, 100) == "<|box_start|>(0,0),(990,990)<|box_end|>"
    assert old.parse("<|box_start|>(0,0),(990,990)<|box_end|>", 100, 100)[0].box == Box(0, 0, 100, 100)
    with pytest.warns(DeprecationWarning):
        assert get_dialect("qwen3-vl").box(Box(0, 0, 10, 10), 100, 100) == '{"bbox_2d": [0, 0, 90, 90]}'


@pytest.mark.parametrize("old", sorted(DEPRECATED_NAMES))
def test_old_names_still_read_with_a_warning_and_are_not_listed(old):
    with pytest.warns(DeprecationWarning, match=DEPRECATED_NAMES[old]):
        dialect = get_dialect(old)
    assert dialect is DIALECTS[DEPRECATED_NAMES[old]] and old not in DIALECTS
    with pytest.raises(KeyError) as error:
        get_dialect("nonsense")
    assert old not in str(error.value).split("known: ")[1].split(".")[0].split(", ")


def test_no_dialect_name_is_a_family_or_format_name():
    from medground.data.export import EXPORTERS, SHARDED_FORMATS
    from medground.mllm.families import FAMILIES

    taken = {*FAMILIES, *EXPORTERS, *SHARDED_FORMATS}
    assert taken and not taken & set(DIALECTS)
    for name, dialect in DIALECTS.items():
        assert dialect.name == name
    for family in FAMILIES.values():
        assert family.box_dialect in DIALECTS


def test_render_joins_with_each_dialects_own_separators():
    boxes = [Grounded(None, Box(0, 0, 10, 10)), Grounded(None, Box(10, 10, 20, 20))]
    qwen, florence = get_dialect("qwen-vl-grid"), get_dialect("florence-2-loc")
    # 100 x 100: qwen bins of the first and last pixel; Florence bins of the edges, nothing between boxes
    assert qwen.render(boxes, 100, 100) == "<box>(0,0),(90,90)</box>, <box>(100,100),(190,190)</box>"
    assert (
        florence.render(boxes, 100, 100)
        == "<loc_0><loc_0><loc_100><loc_100><loc_100><loc_100><loc_200><loc_200>"
    )
    two = [Grounded("liver", Box(0, 0, 10, 10)), Grounded("spleen", Box(10, 10, 20, 20))]
    assert (
        florence.render(two, 100, 100)
        == "liver<loc_0><loc_0><loc_100><loc_100>spleen<loc_100><loc_100><loc_200><loc_200>"
    )
    assert florence.parse(florence.render(two, 100, 100), 100, 100) == two


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_quantise_is_what_the_text_gives_back(name):
    import random

    dialect, rng = DIALECTS[name], random.Random(0)
    for _ in range(300):
        width, height = rng.randint(16, 3000), rng.randint(16, 3000)
        x0, y0 = rng.randrange(width), rng.randrange(height)
        box = Box(x0, y0, rng.randint(x0 + 1, width), rng.randint(y0 + 1, height))
        assert (
            dialect.quantise(box, width, height)
            == dialect.parse(dialect.box(box, width, height), width, height)[0].box
        )


# InternVL's own definition (docs/en/get_started/chat_data_format.md of OpenGVLab's InternVL docs, "Grounding /
# Detection Data", and internvl_chat/eval/refcoco/evaluate_grounding.py at commit 0355722a): boxes are
# normalised as round(x / width * 1000) on the box's pixel edges, and a predicted box is read back as
# value / 1000 * width. Re-implemented here from that text, independently of medground's code.
def _internvl_normalise(box, width, height):
    x1, y1, x2, y2 = box
    return [
        round((x1 / width) * 1000),
        round((y1 / height) * 1000),
        round((x2 / width) * 1000),
        round((y2 / height) * 1000),
    ]


def _internvl_denormalise(values, width, height):
    return [
        values[0] / 1000 * width,
        values[1] / 1000 * height,
        values[2] / 1000 * width,
        values[3] / 1000 * height,
    ]


@pytest.mark.parametrize(
    ("box", "size"),
    [
        ((0, 0, 427, 640), (427, 640)),  # full image -> 1000 on both ends
        ((104, 300, 238, 477), (427, 640)),  # a RefCOCO-sized image
        ((10, 8, 30, 20), (64, 48)),
        ((1001, 5, 2002, 1430), (2943, 1435)),  # a large dental radiograph
        ((0, 0, 1, 1), (3000, 3000)),  # a one-pixel box in a large image keeps a pixel
    ],
)
def test_internvl_follows_internvls_own_formula(box, size):
    d = get_dialect("internvl-norm1000")
    w, h = size
    numbers = _internvl_normalise(box, w, h)
    assert d.ground("liver", [Box(*box)], w, h) == f"<ref>liver</ref><box>[{numbers}]</box>"
    edges = _internvl_denormalise(numbers, w, h)
    got = d.parse(d.box(Box(*box), w, h), w, h)[0].box
    expected = [round(v) for v in edges]
    if expected[2] <= expected[0]:
        expected[2] = expected[0] + 1  # a box keeps at least one pixel
    if expected[3] <= expected[1]:
        expected[3] = expected[1] + 1
    assert got.as_list() == expected
    if max(w, h) <= 1000:
        assert got == Box(*box)  # exact where a scale step is at most one pixel


def test_internvl_groups_boxes_in_one_tag_and_reads_internvls_example():
    d = get_dialect("internvl-norm1000")
    text = d.ground("hip", [Box(0, 0, 10, 10), Box(50, 50, 100, 100)], 100, 100)
    assert text == "<ref>hip</ref><box>[[0, 0, 100, 100], [500, 500, 1000, 1000]]</box>"
    # InternVL's docs example (RefCOCO, 427 x 640): [[243, 469, 558, 746]]
    parsed = d.parse("<ref>the lady with the blue shirt</ref><box>[[243, 469, 558, 746]]</box>", 427, 640)
    assert parsed[0].label == "the lady with the blue shirt"
    assert parsed[0].box == Box(round(243 * 0.427), round(469 * 0.64), round(558 * 0.427), round(746 * 0.64))
    assert d.has_box("at [[1, 2, 3, 4]]") and not d.has_box("no box")


def test_a_new_tag_syntax_works_through_every_consumer_by_construction():
    from medground.grounding import TagDialect
    from medground.mllm.data import convert_text

    custom = TagDialect("custom", "<obj>", "</obj>", "<bb>", "</bb>")
    text = "The " + custom.ground("liver", [Box(20, 10, 60, 50)], 200, 100) + " is here."
    assert text == "The <obj>liver</obj><bb>(100,100),(295,490)</bb> is here."
    assert custom.has_box(text) and [m.group(0) for m in custom.span_pattern.finditer(text)] == [text[4:-9]]
    expected = 'The {"bbox_2d": [100, 100, 300, 500], "label": "liver"} is here.'
    assert reground_text(text, custom, get_dialect("qwen3-vl-norm1000"), 200, 100) == expected
    assert convert_text(text, custom, get_dialect("qwen3-vl-norm1000"), 200, 100) == expected


def test_a_loose_pattern_of_another_dialect_does_not_change_conversion(monkeypatch):
    from medground.grounding import TagDialect

    class Loose(TagDialect):
        @property
        def span_pattern(self):  # matches any digit anywhere
            return re.compile(r"\d")

    monkeypatch.setitem(DIALECTS, "zz-loose-test", Loose("zz-loose-test", "<a>", "</a>", "<b>", "</b>"))
    qwen = get_dialect("qwen-vl-grid")
    text = "In 2024, the <ref>liver</ref><box>(100,100),(295,490)</box> at 3 cm."
    assert reground_text(text, qwen, get_dialect("qwen3-vl-norm1000"), 200, 100, [Box(20, 10, 60, 50)]) == (
        'In 2024, the {"bbox_2d": [100, 100, 300, 500], "label": "liver"} at 3 cm.'
    )


# Box [20, 10, 60, 50) of a 200 x 100 image, in every dialect, by hand:
# bins of the first/last pixel: floor(20 * 1000 / 200) = 100, floor(10 * 1000 / 100) = 100, last x 59 -> 295,
# last y 49 -> 490; edges: 20 * 5 = 100, 10 * 10 = 100, 60 * 5 = 300, 50 * 10 = 500; Florence-2 bins the edges
# (same numbers here); qwen2.5-vl-pixels: smart_resize(100, 200) = (112, 196), so x * 0.98 and y * 1.12 rounded:
# 20, 11, 59, 56; llava-1.5-square: a 200 x 200 square with the image at y = 50, edges / 200: 0.1, 0.3, 0.3, 0.5.
BY_HAND = {
    "qwen-vl-grid": "<ref>liver</ref><box>(100,100),(295,490)</box>",
    "qwen2-vl-grid": "<|object_ref_start|>liver<|object_ref_end|><|box_start|>(100,100),(295,490)<|box_end|>",
    "qwen2-vl-norm1000": "<|object_ref_start|>liver<|object_ref_end|><|box_start|>(100,100),(300,500)<|box_end|>",
    "qwen2.5-vl-pixels": '{"bbox_2d": [20, 11, 59, 56], "label": "liver"}',
    "qwen3-vl-grid": '{"bbox_2d": [100, 100, 295, 490], "label": "liver"}',
    "qwen3-vl-norm1000": '{"bbox_2d": [100, 100, 300, 500], "label": "liver"}',
    "internvl-norm1000": "<ref>liver</ref><box>[[100, 100, 300, 500]]</box>",
    "florence-2-loc": "liver<loc_100><loc_100><loc_300><loc_500>",
    "llava-1.5-square": "liver [0.1, 0.3, 0.3, 0.5]",
}


@pytest.mark.parametrize("name", sorted(BY_HAND))
def test_round_trip_by_hand(name):
    d = get_dialect(name)
    assert d.ground("liver", [Box(20, 10, 60, 50)], 200, 100) == BY_HAND[name]
    assert d.parse(f"It is {BY_HAND[name]}.", 200, 100)[-1] == Grounded(
        "It is liver" if not d.labels_delimited else "liver", Box(20, 10, 60, 50)
    )
