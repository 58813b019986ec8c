import string

from medground.data.generators import load_phrases
from medground.data.generators.base import fill, name_words

ALLOWED = {
    "name",
    "the_name",
    "The_name",
    "the",
    "The",
    "is",
    "it",
    "It_is",
    "it_is",
    "does",
    "appears",
    "lies",
    "count",
    "position",
    "box",
    "grounding",
    "other",
    "relation",
    "image",
    "Image",
    "region_clause",
    "structures",
}


def test_bank_sizes():
    bank = load_phrases()
    for task in ("rec", "roc", "reg", "mia", "negative"):
        questions = bank[task]["questions"]
        answers = bank[task]["answers"]
        assert len(questions) >= 20, task
        assert len(set(questions)) == len(questions), task
        assert len(answers) >= 5, task
        assert len(set(answers)) == len(answers), task
    assert len(bank["rec"]["answers_multi"]) >= 5
    assert len(bank["reg"]["relations"]) >= 5
    assert len(bank["mia"]["answers_empty"]) >= 5


def test_templates_use_only_known_placeholders():
    bank = load_phrases()
    for task, section in bank.items():
        if not isinstance(section, dict):
            continue
        for kind, templates in section.items():
            for template in templates:
                fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
                assert fields <= ALLOWED, (task, kind, template, fields - ALLOWED)
                assert "<image>" not in template


def test_box_questions_point_at_a_box_and_name_questions_name():
    bank = load_phrases()
    for task in ("roc", "reg"):
        assert all("{box}" in q for q in bank[task]["questions"]), task
    for task in ("rec", "negative"):
        assert all("{the_name}" in q for q in bank[task]["questions"]), task
    assert all("{grounding}" in a for a in bank["rec"]["answers"] + bank["rec"]["answers_multi"])
    assert all("{structures}" in a for a in bank["mia"]["answers"])
    assert all("{other}" in a and "{relation}" in a for a in bank["reg"]["relations"])


def test_every_template_fills_with_the_generators_values():
    values = {
        **name_words("both lungs"),
        "count": 2,
        "position": "in the centre of the image",
        "box": "<box>(1,2),(3,4)</box>",
        "grounding": "<ref>x</ref><box>(1,2),(3,4)</box>",
        "other": "<ref>y</ref><box>(1,2),(3,4)</box>",
        "relation": "above",
        "image": "an axial CT image",
        "Image": "An axial CT image",
        "region_clause": " of the chest",
        "structures": "both lungs",
    }
    assert set(values) == ALLOWED
    for section in load_phrases().values():
        if isinstance(section, dict):
            for templates in section.values():
                for template in templates:
                    assert "{" not in fill(template, **values), template


def test_verb_agreement_for_plural_and_singular_names():
    others = {
        "count": 2,
        "position": "here",
        "box": "B",
        "grounding": "G",
        "other": "O",
        "relation": "above",
        "image": "an X-ray image",
        "Image": "An X-ray image",
        "region_clause": "",
        "structures": "S",
    }
    plural_wrong = (
        "both lungs is",
        "both lungs appears",
        "both lungs does",
        "both lungs lies",
        "are it",
        "They is",
        "they is",
        "it is not",
    )
    singular_wrong = (
        "liver are",
        "liver appear ",
        "liver do ",
        "liver lie ",
        "is they",
        "They are",
        "they are",
    )
    for name, wrong in (("both lungs", plural_wrong), ("liver", singular_wrong)):
        for section in ("rec", "negative", "roc", "reg"):
            for templates in load_phrases()[section].values():
                for template in templates:
                    text = fill(template, **name_words(name), **others)
                    assert not any(w in text for w in wrong), (name, text)
