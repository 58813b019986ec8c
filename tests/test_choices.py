"""The one "unknown name" message: what was asked, what is known, the closest known name."""

import pytest

from medground.choices import closest, unknown_choice
from medground.data.sources import open_source
from medground.grounding import get_dialect
from medground.io.display import ct_window


def test_message_lists_known_names_and_the_closest():
    assert unknown_choice("format", "swfit", ["llava", "swift"]) == (
        "unknown format 'swfit'; known: llava, swift. Did you mean 'swift'?"
    )
    assert unknown_choice("format", "zzz", ["llava", "swift"]) == "unknown format 'zzz'; known: llava, swift."
    assert closest("qwen2-vI", ["qwen-vl", "qwen2-vl"]) == "qwen2-vl"
    assert closest("zzz", ["qwen-vl"]) is None


def test_listed_names_may_differ_from_the_hinted_ones():
    text = unknown_choice("body region", "abdomem", ["abdomen", "belly"], listed=["abdomen"])
    assert text == "unknown body region 'abdomem'; known: abdomen. Did you mean 'abdomen'?"


def test_every_chooser_speaks_the_same_way(tmp_path):
    with pytest.raises(
        KeyError, match=r"unknown dialect 'qwen2-vI'; known: .*Did you mean 'qwen2-vl-grid'\?"
    ):
        get_dialect("qwen2-vI")
    with pytest.raises(ValueError, match=r"unknown CT window 'lugn'; known: .*Did you mean 'lung'\?"):
        ct_window("lugn")
    with pytest.raises(ValueError, match=r"unknown source kind 'medsge'; known: .*Did you mean 'medseg'\?"):
        open_source(f"medsge:{tmp_path}/nothing")


def _choosers(tmp_path):
    """(what, known names, call) for every registry chosen by name: a new entry is checked with no edit here."""
    from medground.data.export import FORMATS, export
    from medground.data.sources import SOURCES
    from medground.grounding import DIALECTS
    from medground.mllm.families import FAMILIES, get_family
    from medground.tasks import TASKS, task_spec

    return [
        ("task", list(TASKS), task_spec),
        ("dialect", list(DIALECTS), get_dialect),
        ("model family", list(FAMILIES), get_family),
        ("export format", list(FORMATS), lambda name: export(tmp_path, name)),
        ("source kind", list(SOURCES), lambda name: open_source(f"{name}:{tmp_path}/nothing")),
    ]


def test_every_registered_name_is_suggested_for_its_typo(tmp_path):
    # structure, not a list: for every entry of every registry, the name with one extra letter is
    # refused with the known names listed and the entry suggested
    for what, known, choose in _choosers(tmp_path):
        assert known, what
        for name in known:
            with pytest.raises((KeyError, ValueError)) as caught:
                choose(f"{name}x")
            message = str(caught.value)
            assert f"unknown {what} '{name}x'" in message and f"Did you mean '{name}'?" in message, message
