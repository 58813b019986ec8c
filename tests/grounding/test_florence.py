"""Florence-2's ``<loc_>`` dialect, checked by hand and against Florence-2's own post-processor code."""

from types import SimpleNamespace

import pytest

from medground.grounding import Grounded, get_dialect, reground_text
from medground.types import Box

FLORENCE = get_dialect("florence-2-loc")


def test_florence_by_hand():
    # 200 x 100 image, box [20, 10, 60, 50): edge bins floor(e * 1000 / size): 100, 100, 300, 500
    text = FLORENCE.ground("liver", [Box(20, 10, 60, 50)], 200, 100)
    assert text == "liver<loc_100><loc_100><loc_300><loc_500>"
    # back: the edge nearest each bin's centre, (n + 0.5) * size / 1000: 20.1 -> 20, 10.05 -> 10, 60.1 -> 60,
    # 50.05 -> 50
    assert FLORENCE.parse(text, 200, 100) == [Grounded("liver", Box(20, 10, 60, 50))]
    # a full-width box on a 1000-px side ends in bin 999 (Florence-2's clip), read back as edge 999
    assert FLORENCE.box(Box(0, 0, 1000, 500), 1000, 500) == "<loc_0><loc_0><loc_999><loc_999>"
    assert FLORENCE.parse("<loc_0><loc_0><loc_999><loc_999>", 1000, 500)[0].box == Box(0, 0, 999, 500)


def test_undelimited_labels_are_the_text_before_the_boxes():
    # Florence-2's detection output: phrases and boxes with nothing between them; 2 boxes of one phrase
    text = "<s>car<loc_52><loc_333><loc_932><loc_774>door handle<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8></s>"
    found = FLORENCE.parse(text, 1000, 1000)
    assert [g.label for g in found] == ["car", "door handle", "door handle"]
    # bins on a 1000-px side are pixels: (n + 0.5) rounds down to n
    assert [g.box for g in found] == [Box(52, 333, 932, 774), Box(1, 2, 3, 4), Box(5, 6, 7, 8)]
    assert FLORENCE.parse("<loc_1><loc_2><loc_3><loc_4>", 1000, 1000) == [Grounded(None, Box(1, 2, 3, 4))]
    assert not FLORENCE.labels_delimited


def test_converting_from_florence_keeps_the_label_as_text():
    qwen = get_dialect("qwen-vl-grid")
    text = "The liver<loc_100><loc_100><loc_300><loc_500> is here."
    # the box alone is the span; 200 x 100, box [20, 10, 60, 50): qwen bins of first/last pixel 100,100,295,490
    assert reground_text(text, FLORENCE, qwen, 200, 100) == "The liver<box>(100,100),(295,490)</box> is here."
    back = "The <ref>liver</ref><box>(100,100),(295,490)</box> is here."
    assert reground_text(back, qwen, FLORENCE, 200, 100, [Box(20, 10, 60, 50)]) == (
        "The liver<loc_100><loc_100><loc_300><loc_500> is here."
    )


torch = pytest.importorskip("torch")


@pytest.mark.parametrize(
    ("boxes", "size"),
    [
        ([(20, 10, 60, 50)], (200, 100)),
        ([(0, 0, 427, 640), (104, 300, 238, 477)], (427, 640)),  # full image and a RefCOCO-sized box
        ([(1001, 5, 2002, 1430)], (2943, 1435)),  # a large dental radiograph
        ([(3, 4, 5, 6)], (37, 900)),
    ],
)
def test_florence_agrees_with_florences_own_post_processor(boxes, size):
    from transformers.models.florence2.processing_florence2 import Florence2PostProcessor

    w, h = size
    post = Florence2PostProcessor({}, SimpleNamespace(all_special_tokens=[]))
    bins = post.quantize(torch.tensor(boxes, dtype=torch.float32), (w, h)).tolist()
    text = FLORENCE.ground("lesion", [Box(*b) for b in boxes], w, h)
    assert text == "lesion" + "".join(f"<loc_{n}>" for row in bins for n in row)
    theirs = post.parse_description_with_bboxes_from_text_and_spans(text, image_size=(w, h))
    ours = FLORENCE.parse(text, w, h)
    assert [t["cat_name"] for t in theirs] == [g.label for g in ours] == ["lesion"] * len(boxes)
    for t, g in zip(theirs, ours, strict=True):
        # Florence-2 truncates the bin centre, we take the nearest edge: at most one bin apart
        step = max(w, h) / 1000
        assert all(abs(a - b) <= step + 1 for a, b in zip(t["bbox"], g.box.as_list(), strict=True))
