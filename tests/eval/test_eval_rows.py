"""Reading the three prediction forms and the task rules."""

import json
import re

import pytest

from medground.eval.rows import auto_task, bird_modality_key, load_rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_bird_rows_modality_from_file_name_prefix(tmp_path):
    path = _write(
        tmp_path / "preds.jsonl",
        [
            {"id": "1", "image": "x_chest_01.png", "question": "q", "annotation": "liver", "response": "r"},
            {
                "id": "2",
                "image": "some/dir/fundus_7.png",
                "question": "q",
                "annotation": "a",
                "response": "r",
            },
            {"id": "3", "image": "histo_1.png", "question": "q", "annotation": "a", "response": "r"},
        ],
    )
    rows = load_rows(path, task="roc")
    assert [r.bird_modality for r in rows] == ["x", "fundus", None]
    assert [r.modality for r in rows] == ["x-ray", "fundus", "histo"]
    assert {r.task for r in rows} == {"roc"}


def test_file_name_tag_gives_task(tmp_path):
    path = _write(
        tmp_path / "0301_test_RO_pred.jsonl",
        [{"id": "1", "image": "ct_1.png", "question": "Where?", "annotation": "a", "response": "r"}],
    )
    assert load_rows(path)[0].task == "roc"


def test_auto_task_rule():
    assert auto_task("What is in <box>(1,2),(3,4)</box>?", "Liver") == "roc"
    assert (
        auto_task("Describe <box>(1,2),(3,4)</box>", "A large lesion in the upper lobe of the left lung.")
        == "reg"
    )
    assert auto_task("Where is the liver?", "<ref>liver</ref><box>(1,2),(3,4)</box>") == "rec"
    assert auto_task("Describe the image.", "This is a CT scan of the abdomen.") == "mia"


def test_flat_rows_and_record_rows(tmp_path):
    flat = {
        "id": "a#0",
        "image": "images/a.png",
        "modality": "x-ray",
        "task": "rec",
        "question": "q",
        "annotation": "ans",
        "response": "r",
        "width": 20,
        "height": 10,
        "negative": True,
        "dialect": "qwen2-vl-norm1000",
    }
    record = {
        "id": "b",
        "image": "images/b.png",
        "width": 8,
        "height": 8,
        "modality": "ct",
        "dialect": "qwen-vl",  # an old name: read, under its name now
        "conversations": [
            {"from": "human", "value": "<image>\nWhere is the liver?"},
            {"from": "gpt", "value": "<ref>liver</ref><box>(0,0),(999,999)</box>"},
            {"from": "human", "value": "What is this?"},
            {"from": "gpt", "value": "liver"},
        ],
        "turns": [
            {"task": "rec", "structure": "liver", "negative": False},
            {"task": "roc", "structure": "liver", "negative": False},
        ],
        "response": ["<box>(0,0),(999,999)</box>", "the liver"],
    }
    with pytest.warns(DeprecationWarning, match="qwen-vl-grid"):
        rows = load_rows(_write(tmp_path / "p.jsonl", [flat, record]))
    assert [r.dialect for r in rows] == ["qwen2-vl-norm1000", "qwen-vl-grid", "qwen-vl-grid"]
    assert [(r.task, r.bird_modality, r.negative) for r in rows] == [
        ("rec", "x", True),
        ("rec", "ct", False),
        ("roc", "ct", False),
    ]
    assert rows[1].question == "Where is the liver?" and rows[2].response == "the liver"
    assert rows[2].structure == "liver" and rows[1].width == 8


def test_bad_inputs_raise_with_location(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "1"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_rows(path)
    with pytest.raises(ValueError, match="unknown task"):
        load_rows(
            _write(tmp_path / "ok.jsonl", [{"id": 1, "image": "ct_1", "annotation": "", "response": ""}]),
            task="grounding",
        )
    with pytest.raises(FileNotFoundError):
        load_rows(tmp_path / "missing.jsonl")
    flat = {"id": 1, "modality": "ct", "task": "rec", "annotation": "", "response": "", "dialect": "qwen9-vl"}
    with pytest.raises(ValueError, match=r"dialect.jsonl:1: unknown dialect 'qwen9-vl'"):
        load_rows(_write(tmp_path / "dialect.jsonl", [flat]))


def test_a_loose_pattern_of_another_dialect_does_not_change_task_guessing(monkeypatch):
    from medground.grounding import DIALECTS, TagDialect

    class Loose(TagDialect):
        @property
        def bare_pattern(self):  # any digit is a "box"
            return re.compile(r"\d")

    rows = [
        ("How many kidneys are there in 2024?", "2"),
        ("Describe the image.", "This is a CT scan of the abdomen."),
    ]
    before = [auto_task(q, a) for q, a in rows]
    monkeypatch.setitem(DIALECTS, "zz-loose-test", Loose("zz-loose-test", "<a>", "</a>", "<b>", "</b>"))
    assert [auto_task(q, a) for q, a in rows] == before
    assert before[0] not in ("roc", "reg")  # the question has no box of the rows' dialect


def test_bird_modality_key():
    assert bird_modality_key("x-ray") == "x" and bird_modality_key("MR") == "mr"
    assert bird_modality_key("histopathology") is None
