"""The data engine's negative answers must read as "not present" to the strict protocol, and its
positive answers must not."""

from medground.data.generators.base import fill, load_phrases, name_words
from medground.eval.strict import ABSENCE


def test_every_negative_answer_phrasing_is_detected_as_absence():
    for template in load_phrases()["negative"]["answers"]:
        for name in ("liver", "both lungs", "left hip"):
            text = fill(template, **name_words(name))
            assert ABSENCE.search(text), text


def test_roc_answers_are_not_read_as_absence():
    for template in load_phrases()["roc"]["answers"]:
        text = fill(template, **name_words("liver"))
        assert not ABSENCE.search(text), text
