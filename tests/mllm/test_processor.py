import numpy as np
import pytest
from PIL import Image

from medground.mllm.families import get_family
from medground.mllm.processor import build_processor, image_tokens, load_processor
from medground.mllm.tiny import SPECIAL_TOKENS, train_tokenizer

from .conftest import FAMILY_NAMES

TEXTS = ["Where is the liver?", "The liver is at (12,34),(56,78).", "It is the spleen."]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS * 5, vocab_size=300)


def test_tokenizer_has_qwen_special_tokens_as_single_ids(tokenizer):
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.convert_tokens_to_ids(token) == i
    ids = tokenizer("<|box_start|>(1,2)<|box_end|>", add_special_tokens=False)["input_ids"]
    assert ids[0] == 5 and ids[-1] == 6
    assert tokenizer.decode(ids, skip_special_tokens=False) == "<|box_start|>(1,2)<|box_end|>"
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    # Digits are single tokens, as in Qwen's tokenizer (the corpus has "12", "34", ... as words).
    assert tokenizer.convert_ids_to_tokens(tokenizer("(12,345)", add_special_tokens=False)["input_ids"]) == [
        "(",
        "1",
        "2",
        ",",
        "3",
        "4",
        "5",
        ")",
    ]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_processor_builds_saves_and_reloads_offline(tmp_path, tokenizer, family):
    proc = build_processor(get_family(family), tokenizer, 56 * 56, 64 * 64)
    image = Image.fromarray(np.zeros((48, 64), np.uint8))
    out = proc.image_processor(images=[image.convert("RGB")], return_tensors="pt")
    patch = get_family(family).patch_size
    # 64 x 48 -> both sides round to 2 * factor: 56 x 56 (factor 28) or 64 x 64 (factor 32), 4 merged tokens.
    side = 2 * 2 * patch
    assert out["image_grid_thw"].tolist() == [[1, side // patch, side // patch]]
    assert image_tokens(proc, 48, 64) == 4
    proc.save_pretrained(tmp_path)
    again = load_processor(tmp_path)
    assert again.image_processor.patch_size == patch
    assert again.image_processor.size == {"shortest_edge": 56 * 56, "longest_edge": 64 * 64}
    assert again.tokenizer.get_vocab() == tokenizer.get_vocab()
    assert not hasattr(again, "video_processor") or again.video_processor is None


def test_chat_template_renders_qwen_layout(tokenizer):
    proc = build_processor(get_family("qwen2-vl"), tokenizer, 56 * 56, 64 * 64)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is it?"}]},
        {"role": "assistant", "content": "Here."},
    ]
    text = proc.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Where is it?<|im_end|>\n"
        "<|im_start|>assistant\nHere.<|im_end|>\n"
    )


def test_missing_processor_files_raise_with_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no processor"):
        load_processor(tmp_path)
