import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from medground.mllm.data import read_records
from medground.mllm.families import get_family
from medground.mllm.grounder import Grounder, predict

from .conftest import FAMILY_NAMES

# Training images of the synthetic set (conftest.make_dataset): image i has the liver at
# [6 + 2i, 8, 30 + 2i, 28); images 0 and 2 are the train split.
LIVER = {0: [6, 8, 30, 28], 2: [10, 8, 34, 28]}


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_overfit_model_answers_training_questions_with_exact_boxes(overfit, family):
    grounder = Grounder.from_pretrained(overfit[family])
    for i, expected in LIVER.items():
        answer = grounder.ask(overfit["data"] / "images" / "syn" / f"img{i}.png", "Where is the liver?")
        assert [(g.label, g.box.as_list()) for g in answer.boxes] == [("liver", expected)], answer.text
        # The text is in the family's own dialect: read it back independently of medground's parser.
        assert _boxes_in_text(answer.text, family, overfit[family]) == [expected]


def _boxes_in_text(text: str, family: str, model_dir) -> list[list[int]]:
    """Boxes of a 64x48 image written in ``family``'s text, decoded by hand: Qwen2-VL and Qwen3-VL as box
    edges on [0, 1000] (round(n * size / 1000), Qwen's own process_bbox convention); Qwen2.5-VL by dividing
    its resized-input pixels by transformers' own smart_resize scale for the processor's pixel limits."""
    width, height = 64, 48
    if family == "qwen2-vl":
        numbers = re.findall(r"<\|box_start\|>\((\d+),(\d+)\),\((\d+),(\d+)\)<\|box_end\|>", text)
        grid = [[int(v) for v in n] for n in numbers]
    else:
        grid = [json.loads(item)["bbox_2d"] for item in re.findall(r"\{[^{}]*\}", text)]
    if family == "qwen2.5-vl":
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        size = json.loads((model_dir / "processor_config.json").read_text())["image_processor"]["size"]
        rh, rw = smart_resize(height, width, 28, size["shortest_edge"], size["longest_edge"])
        return [
            [round(x0 * width / rw), round(y0 * height / rh), round(x1 * width / rw), round(y1 * height / rh)]
            for x0, y0, x1, y1 in grid
        ]
    return [
        [
            round(x0 * width / 1000),
            round(y0 * height / 1000),
            round(x1 * width / 1000),
            round(y1 * height / 1000),
        ]
        for x0, y0, x1, y1 in grid
    ]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_trained_models_decode_with_the_kv_cache_even_when_saved_without_it(overfit, family, tmp_path):
    """The HF Trainer turns ``use_cache`` off for training; a saved model must still decode one new
    token per step (the cache), not re-read the whole sequence every step, and answer the same."""
    for name in ("config.json", "generation_config.json"):  # what medground train writes now
        assert json.loads((overfit[family] / name).read_text())["use_cache"] is True, name
    shutil.copytree(overfit[family], tmp_path / "m")
    for name in ("config.json", "generation_config.json"):  # as models trained before the fix were saved
        path = tmp_path / "m" / name
        path.write_text(json.dumps(json.loads(path.read_text()) | {"use_cache": False}))
    grounder = Grounder.from_pretrained(tmp_path / "m")
    lengths: list[int] = []
    grounder.model.register_forward_pre_hook(
        lambda _, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    image = overfit["data"] / "images" / "syn" / "img0.png"
    answer = grounder.ask(image, "Where is the liver?")
    assert len(lengths) > 5 and lengths[0] > 20 and set(lengths[1:]) == {1}, lengths
    from medground.mllm.data import encode_prompt, load_image

    inputs = encode_prompt(grounder.processor, load_image(image), "Where is the liver?")
    tok = grounder.processor.tokenizer
    without = grounder.model.generate(
        **inputs,
        max_new_tokens=len(lengths),
        do_sample=False,
        use_cache=False,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.pad_token_id,
    )
    decoded = tok.decode(without[0, inputs["input_ids"].shape[1] :].tolist(), skip_special_tokens=False)
    assert answer.text == decoded.split("<|im_end|>")[0].strip()


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_questions_answered_together_get_the_answers_given_alone(overfit, family):
    """One batch of prompts of different lengths (another image size, a box, a history) answers each
    question as it is answered alone: left padding moves no token's position or rope index."""
    grounder = Grounder.from_pretrained(overfit[family])
    images = overfit["data"] / "images" / "syn"
    larger = Image.open(images / "img1.png").convert("RGB").resize((96, 72))
    box_question = grounder.prompt("What is at {box}?", LIVER[2], 64, 48)
    asked = [
        (images / "img0.png", "Where is the liver?", None, ()),
        (larger, "Where is the liver?", None, ()),
        (images / "img2.png", "What is at {box}?", LIVER[2], ()),
        (images / "img2.png", "Where is the liver?", None, [(box_question, "liver")]),
    ]
    alone = [grounder.ask(*a) for a in asked]
    together = grounder.answer([grounder.encode(*a) for a in asked])
    assert together == alone
    assert len({a.text for a in alone}) > 1, "the questions differ, so equal answers are not one repeated"
    lengths = {grounder.encode(*a).inputs["input_ids"].shape[1] for a in asked}
    assert len(lengths) >= 3, lengths  # the batch really was padded
    with pytest.raises(ValueError, match="one answer"):
        grounder.answer([grounder.encode(*a) for a in asked[:2]], on_text=print)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_save_and_reload_give_identical_outputs(overfit, family, tmp_path):
    first = Grounder.from_pretrained(overfit[family])
    first.model.save_pretrained(tmp_path)
    first.processor.save_pretrained(tmp_path)
    shutil.copy(overfit[family] / "medground.json", tmp_path)
    second = Grounder.from_pretrained(tmp_path)
    image = overfit["data"] / "images" / "syn" / "img0.png"
    from medground.mllm.data import encode_prompt, load_image

    inputs = encode_prompt(first.processor, load_image(image), "Where is the liver?")
    with torch.no_grad():
        assert torch.equal(first.model(**inputs).logits, second.model(**inputs).logits)
    assert first.ask(image, "Where is the liver?") == second.ask(image, "Where is the liver?")


def test_ask_accepts_a_box_in_original_pixels_and_any_image(overfit):
    grounder = Grounder.from_pretrained(overfit["qwen2-vl"])
    assert grounder.prompt("What is at {box}?", [34, 20, 58, 40], 64, 48) == (
        "What is at <|box_start|>(531,417),(906,833)<|box_end|>?"
    )  # edges: round(34000/64) = 531, round(20000/48) = 417, round(58000/64) = 906, round(40000/48) = 833
    assert grounder.prompt("What is this?", [0, 0, 64, 48], 64, 48).endswith(
        "<|box_start|>(0,0),(1000,1000)<|box_end|>"
    )
    with pytest.raises(ValueError, match="outside the 64x48 image"):
        grounder.prompt("What is at {box}?", [0, 0, 65, 48], 64, 48)
    for image in (
        np.zeros((300, 70), np.uint8),
        Image.new("RGB", (500, 120)),
        np.zeros((33, 33, 3), np.uint8),
    ):
        answer = grounder.ask(image, "What is at {box}?", box=[1, 1, 20, 20])
        assert isinstance(answer.text, str)
        width, height = image.size if isinstance(image, Image.Image) else image.shape[1::-1]
        assert all(g.box.fits(width, height) for g in answer.boxes)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_predict_writes_parseable_rows_in_the_model_dialect(overfit, family, tmp_path):
    grounder = Grounder.from_pretrained(overfit[family])
    out = tmp_path / "pred.jsonl"
    assert predict(grounder, overfit["data"], "train", out) == 4
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["task"] for r in rows} == {"rec", "roc"}
    rec = [r for r in rows if r["task"] == "rec"]
    for row in rec:
        assert row["dialect"] == get_family(family).box_dialect and row["width"] == 64
        assert [b["box"] for b in row["boxes"]] == [LIVER[int(row["image"][-5])]]
    records = {r["id"]: r for r in read_records(overfit["data"], "train")}
    assert all(r["record"] in records and r["annotation"] for r in rows)
    assert {r["case"] for r in rows} == {"c0", "c2"}  # the patient keys of the two train images
    # Resume keeps finished rows (a marked one stays marked) and answers only the missing turns.
    out.write_text(json.dumps(dict(rows[0], response="KEPT")) + "\n")
    seen = []
    assert (
        predict(
            grounder, overfit["data"], "train", out, resume=True, progress=lambda d, t: seen.append((d, t))
        )
        == 4
    )
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert again[0]["response"] == "KEPT" and again[1:] == rows[1:] and seen == [(1, 2), (2, 2)]


def test_missing_or_bad_checkpoints_raise_clear_errors(overfit, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # never touch the network
    with pytest.raises(FileNotFoundError, match="no model directory"):
        Grounder.from_pretrained(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="no hub model 'nobody-here/no-such-model'"):
        Grounder.from_pretrained("nobody-here/no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        Grounder.from_pretrained(tmp_path / "empty")
    pickled = tmp_path / "pickled"
    shutil.copytree(overfit["qwen2-vl"], pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="pickled weights are refused"):
        Grounder.from_pretrained(pickled)
    mismatched = tmp_path / "mismatched"
    shutil.copytree(overfit["qwen2-vl"], mismatched)
    shutil.copy(overfit["qwen3-vl"] / "model.safetensors", mismatched / "model.safetensors")
    with pytest.raises(ValueError, match="does not match"):
        Grounder.from_pretrained(mismatched)


def test_heldout_report_scores_model_and_baselines(overfit, tmp_path):
    from medground.mllm.heldout import heldout_report

    report = heldout_report(
        Grounder.from_pretrained(overfit["qwen2-vl"]), overfit["data"], ("train", "test"), tmp_path
    )
    # Train images: the overfit model is exact (1.0); the prior box is the mean of [6,8,30,28) and [10,8,34,28)
    # = [8,8,32,28): IoU with each = 440 / 520 = 0.85 -> 1.0 too.
    assert report["train"]["rec_acc50_model"] == 1.0 and report["train"]["rec_acc50_prior_box"] == 1.0
    assert report["train"]["roc_acc_majority"] == 1.0  # the only ROC structure is the spleen
    assert set(report) == {"train", "test", "train+test"} and (tmp_path / "heldout.json").is_file()


def test_shipped_bird_nano_loads_by_default_and_grounds():
    from medground.mllm.grounder import DEFAULT_MODEL

    if not (DEFAULT_MODEL / "model.safetensors").is_file():
        pytest.skip(f"bird-nano weights not shipped in {DEFAULT_MODEL}")
    assert (DEFAULT_MODEL / "model.safetensors").stat().st_size <= 30 * 2**20
    grounder = Grounder.from_pretrained()
    image = np.zeros((180, 240), np.uint8)
    image[40:120, 60:160] = 220
    answer = grounder.ask(image, "Where is the skin lesion?")
    assert answer.text
    assert all(g.box.fits(240, 180) for g in answer.boxes)
    # served in the dialect it was trained in (its medground.json), not its family's current default
    assert grounder.dialect.name == "qwen2-vl-grid" and grounder.family.box_dialect == "qwen2-vl-norm1000"
