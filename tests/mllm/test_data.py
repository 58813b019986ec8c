import json

import numpy as np
import pytest

from medground.grounding import get_dialect
from medground.io import ReadError
from medground.mllm.data import (
    IGNORE_INDEX,
    convert_text,
    encode_record,
    load_image,
    read_records,
    record_turns,
)
from medground.mllm.families import get_family
from medground.mllm.processor import build_processor
from medground.mllm.tiny import train_tokenizer
from medground.types import Box

QWEN_VL = get_dialect("qwen-vl-grid")


def test_convert_tag_to_each_dialect_by_hand():
    # 200 x 100 image, box [20, 10, 60, 50): qwen-vl grid x = floor(20*1000/200) = 100, last x 59 -> 295;
    # y = floor(10*1000/100) = 100, last y 49 -> 490. Edges (qwen2/qwen3): 20*5 = 100, 10*10 = 100, 60*5 = 300,
    # 50*10 = 500.
    text = "The <ref>liver</ref><box>(100,100),(295,490)</box> is here."
    box = Box(20, 10, 60, 50)
    assert convert_text(text, QWEN_VL, get_dialect("qwen2-vl-norm1000"), 200, 100, [box]) == (
        "The <|object_ref_start|>liver<|object_ref_end|><|box_start|>(100,100),(300,500)<|box_end|> is here."
    )
    assert convert_text(text, QWEN_VL, get_dialect("qwen3-vl-norm1000"), 200, 100, [box]) == (
        'The {"bbox_2d": [100, 100, 300, 500], "label": "liver"} is here.'
    )
    # qwen2.5-vl at max 56*56 px: 200 x 100 -> (h, w) = (28, 84)... by smart_resize: round -> (112, 196) too big,
    # beta = sqrt(20000/3136) = 2.525; h = floor(100/2.525/28)*28 = 28, w = floor(200/2.525/28)*28 = 56.
    q25 = get_family("qwen2.5-vl").dialect(28 * 28, 56 * 56)
    assert convert_text(text, QWEN_VL, q25, 200, 100, [box]) == (
        'The {"bbox_2d": [6, 3, 17, 14], "label": "liver"} is here.'
    )


def test_convert_keeps_several_boxes_and_bare_boxes():
    text = "What is at <box>(0,0),(499,499)</box>? <ref>kidney</ref><box>(0,0),(99,99)</box><box>(500,500),(999,999)</box>"
    out = convert_text(text, QWEN_VL, get_dialect("qwen3-vl-norm1000"), 1000, 1000)
    assert out == (
        'What is at {"bbox_2d": [0, 0, 500, 500]}? [{"bbox_2d": [0, 0, 100, 100], "label": "kidney"}, '
        '{"bbox_2d": [500, 500, 1000, 1000], "label": "kidney"}]'
    )
    back = convert_text(out, get_dialect("qwen3-vl-norm1000"), QWEN_VL, 1000, 1000)
    assert (
        back
        == "What is at <box>(0,0),(499,499)</box>? <ref>kidney</ref><box>(0,0),(99,99)</box><box>(500,500),(999,999)</box>"
    )


def test_exact_boxes_survive_grid_rounding():
    # 3000 x 1500 image: x0 = 1001 -> bin floor(1001 * 1000 / 3000) = 333 -> back to ceil(333 * 3) = 999 px.
    # qwen2.5-vl with max 5e6 px keeps (1512, 2996): x scale 2996 / 3000, so 1001 -> 999.67 -> 1000 when the
    # exact region box is known and 999 -> 997.67 -> 998 when only the grid text is.
    box = Box(1001, 0, 2000, 10)
    text = QWEN_VL.ground("tooth", [box], 3000, 1500)
    q25 = get_family("qwen2.5-vl").dialect(56 * 56, 5_000_000)
    assert convert_text(text, QWEN_VL, q25, 3000, 1500, [box]).startswith('{"bbox_2d": [1000, ')
    assert convert_text(text, QWEN_VL, q25, 3000, 1500).startswith('{"bbox_2d": [998, ')


def test_read_records_and_turns(dataset):
    records = read_records(dataset)
    assert [r["split"] for r in records] == ["train", "test"]
    turns = record_turns(records[0], get_dialect("qwen2-vl-norm1000"))
    assert turns[0].question == "Where is the liver?"
    assert turns[0].task == "rec" and turns[1].structure == "spleen"
    assert turns[0].answer.startswith("The <|object_ref_start|>liver<|object_ref_end|><|box_start|>")
    with pytest.raises(FileNotFoundError, match="no record shards"):
        read_records(dataset / "images")


def test_bad_conversation_order_is_rejected(dataset):
    record = read_records(dataset)[0]
    record["conversations"] = record["conversations"][1:]
    with pytest.raises(ValueError, match="alternate human/gpt"):
        record_turns(record, QWEN_VL)


def test_encode_puts_loss_only_on_answers_and_expands_the_image(dataset):
    records = read_records(dataset)
    family = get_family("qwen2-vl")
    tok = train_tokenizer(["Where is the liver? The spleen."], vocab_size=300)
    proc = build_processor(family, tok, 56 * 56, 64 * 64)
    dialect = family.dialect(56 * 56, 64 * 64)
    item = encode_record(records[0], proc, dialect, dataset)
    ids, labels = item["input_ids"], item["labels"]
    assert len(ids) == len(labels) == len(item["mm_token_type_ids"])
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    assert ids.count(pad) == 4 == sum(item["mm_token_type_ids"])  # 64x48 -> 56x56 -> 16 patches / 4
    kept = [t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
    assert all(lab == t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX)
    turns = record_turns(records[0], dialect)
    expected = "".join(f"{t.answer}<|im_end|>" for t in turns)
    assert tok.decode(kept, skip_special_tokens=False) == expected
    # The whole sequence is the chat template's text with the image placeholder expanded.
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": turns[0].question}]},
        {"role": "assistant", "content": turns[0].answer},
        {"role": "user", "content": turns[1].question},
        {"role": "assistant", "content": turns[1].answer},
    ]
    text = proc.apply_chat_template(messages, tokenize=False).replace("<|image_pad|>", "<|image_pad|>" * 4)
    assert ids == tok(text, add_special_tokens=False)["input_ids"]


def test_load_image_gray_rgba_and_errors(tmp_path):
    assert load_image(np.zeros((5, 7), np.uint8)).size == (7, 5)
    assert load_image(np.zeros((5, 7, 4), np.uint8)).mode == "RGB"
    with pytest.raises(ValueError, match="uint8"):
        load_image(np.zeros((5, 7), np.float32))
    with pytest.raises(ReadError, match="file not found"):  # the project's one image reader
        load_image(tmp_path / "nope.png")


def test_record_json_fixture_is_valid(dataset):
    line = (dataset / "records" / "shard-00000.jsonl").read_text().splitlines()[0]
    assert json.loads(line)["dialect"] == "qwen-vl-grid"


def test_crop_moves_boxes_into_the_window_and_keeps_mentioned_regions(dataset):
    import random

    from medground.mllm.data import random_crop

    record = read_records(dataset)[0]  # liver [6, 8, 30, 28), spleen [34, 20, 58, 40) on 64 x 48
    for seed in range(20):
        crop = random_crop(record, random.Random(seed), 0.5)
        assert crop.x0 <= 6 and crop.y0 <= 8 and crop.x1 >= 58 and crop.y1 >= 40
    crop = Box(4, 2, 60, 44)  # 56 x 42 window
    turns = record_turns(record, get_dialect("qwen2-vl-norm1000"), crop)
    # liver moves to [2, 6, 26, 26) in 56 x 42: edges round(2000/56) = 36, round(6000/42) = 143,
    # round(26000/56) = 464, round(26000/42) = 619.
    assert "<|box_start|>(36,143),(464,619)<|box_end|>" in turns[0].answer


def test_pad_shifts_boxes_and_image_by_the_border(dataset):
    import random

    from medground.mllm.data import random_pad

    record = read_records(dataset)[0]  # liver [6, 8, 30, 28), spleen [34, 20, 58, 40) on 64 x 48
    for seed in range(20):
        left, top, right, bottom = random_pad(64, 48, random.Random(seed), 0.25)
        assert 0 <= left <= 16 and 0 <= right <= 16 and 0 <= top <= 12 and 0 <= bottom <= 12
    turns = record_turns(record, get_dialect("qwen2-vl-norm1000"), None, (10, 2, 6, 0))
    # padded image 80 x 50; liver moves to [16, 10, 40, 30): edges 16000/80 = 200, 10000/50 = 200,
    # 40000/80 = 500, 30000/50 = 600.
    assert "<|box_start|>(200,200),(500,600)<|box_end|>" in turns[0].answer


def _positions_record(second_position: str) -> dict:
    """90 x 60 image: liver [30, 0, 60, 20) (centre (45, 10): upper third, central third) with a REG turn
    and a REC turn, plus a second region [0, 40, 20, 60) whose phrase tells the display."""
    liver, other = Box(30, 0, 60, 20), Box(0, 40, 20, 60)
    return {
        "id": "pos#0",
        "width": 90,
        "height": 60,
        "dialect": "qwen-vl-grid",
        "conversations": [
            {"from": "human", "value": f"<image>\nDescribe {QWEN_VL.box(liver, 90, 60)} and its position."},
            {"from": "gpt", "value": "This is the liver, in the upper central part of the image."},
            {"from": "human", "value": "Where is the liver?"},
            {
                "from": "gpt",
                "value": f"The {QWEN_VL.ground('liver', [liver], 90, 60)} is in the upper central part of the image.",
            },
            {"from": "human", "value": f"What is at {QWEN_VL.box(other, 90, 60)}?"},
            {"from": "gpt", "value": "It is the spleen."},
        ],
        "turns": [
            {"task": "reg", "structure": "liver", "regions": [0]},
            {"task": "rec", "structure": "liver", "regions": [0]},
            {"task": "roc", "structure": "spleen", "regions": [1]},
        ],
        "regions": [
            {"name": "liver", "box": liver.as_list(), "position": "in the upper central part of the image"},
            {"name": "spleen", "box": other.as_list(), "position": second_position},
        ],
    }


def test_position_phrases_follow_crop_and_pad_by_hand():
    radiological = "in the lower left part of the image (the patient's right side in radiological view)"
    record = _positions_record(radiological)
    # crop [30, 0, 90, 60) (60 x 60): liver -> [0, 0, 30, 20), centre (15, 10): x third int(3*15/60) = 0
    # left, y third int(3*10/60) = 0 upper; the record is radiological (the spleen's phrase names a side).
    turns = record_turns(record, QWEN_VL, Box(30, 0, 90, 60))
    left = "in the upper left part of the image (the patient's right side in radiological view)"
    assert turns[0].answer == f"This is the liver, {left}."
    assert turns[1].answer.endswith(f"is {left}.")
    assert turns[2].answer == "It is the spleen."
    # then a 60-pixel border on the left (120 x 60): liver -> [60, 0, 90, 20), centre (75, 10):
    # x third int(3*75/120) = 1 central, so the phrase is the original one again, without a side.
    turns = record_turns(record, QWEN_VL, Box(30, 0, 90, 60), (60, 0, 0, 0))
    assert turns[0].answer == "This is the liver, in the upper central part of the image."
    # a non-radiological display (a side-less phrase off the central column): no patient side.
    turns = record_turns(
        _positions_record("in the lower left part of the image"), QWEN_VL, Box(30, 0, 90, 60)
    )
    assert turns[0].answer == "This is the liver, in the upper left part of the image."
    # unframed: the text as built.
    assert (
        record_turns(record, QWEN_VL)[0].answer
        == "This is the liver, in the upper central part of the image."
    )


def test_turn_with_undecidable_position_is_dropped():
    # every phrase central: the display is unknown, so the liver's new phrase (left, side or not) cannot be
    # written; its REG and REC turns go, the ROC turn (no position) stays.
    record = _positions_record("in the lower central part of the image")
    turns = record_turns(record, QWEN_VL, Box(30, 0, 90, 60))
    assert [t.task for t in turns] == ["roc"]
    # a pad that keeps the liver in the central column keeps both position turns.
    turns = record_turns(record, QWEN_VL, None, (10, 0, 10, 0))
    assert [t.task for t in turns] == ["reg", "rec", "roc"]
    assert turns[0].answer == "This is the liver, in the upper central part of the image."
