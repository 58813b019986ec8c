"""BiRD's regularization quirks and the strict clean-up, on hand-made strings."""

from medground.eval.postprocess import bird_regularize, strict_clean


def test_im_end_with_period_keeps_text_before_first_and_adds_period():
    assert bird_regularize("The liver.<|im_end|>\nmore text.<|im_end|>") == "The liver."


def test_im_end_newline_is_deleted():
    assert bird_regularize("left<|im_end|>\nkidney") == "leftkidney"


def test_multi_line_answer_keeps_only_second_line():
    assert bird_regularize("Sure.\nThe left kidney\nis here\n") == "The left kidney"
    assert bird_regularize("one\ntwo\nthree") == "two"


def test_two_line_answer_is_untouched_apart_from_strip():
    assert bird_regularize("one\ntwo") == "one\ntwo"


def test_endoftext_removed_and_stripped():
    assert bird_regularize("  Lesion<|endoftext|><|endoftext|> ") == "Lesion"


def test_im_end_without_period_then_newline_rule():
    # step 2 removes "<|im_end|>\n", leaving one newline pair -> step 3 keeps the middle line
    assert bird_regularize("\nliver\n<|im_end|>\n") == "liver"


def test_strict_keeps_every_line():
    assert strict_clean("one\ntwo\nthree<|im_end|>\n") == "one\ntwo\nthree"
