"""Response clean-up: BiRD's exact post-processing and the strict protocol's minimal one."""

from __future__ import annotations

import re

__all__ = ["bird_regularize", "strict_clean"]

_FIRST_INNER_LINE = re.compile(r"\n(.*?)\n", re.DOTALL)
_SPECIAL_TOKENS = re.compile(r"<\|im_end\|>|<\|endoftext\|>|<\|im_start\|>(assistant)?")


def bird_regularize(text: str) -> str:
    """BiRD's ``extract_information`` (tests/models/BiRD/regularization.py), step for step.

    1. if ``.<|im_end|>`` occurs: keep the text before its first occurrence and append ``"."``;
    2. delete every ``<|im_end|>\\n``;
    3. if ``\\n(.*?)\\n`` (DOTALL) matches, the whole string becomes the first match, so an answer
       of three lines or more keeps only its second line;
    4. delete every ``<|endoftext|>``; 5. strip surrounding whitespace.
    """
    if ".<|im_end|>" in text:
        text = text.split(".<|im_end|>")[0] + "."
    text = text.replace("<|im_end|>\n", "")
    match = _FIRST_INNER_LINE.search(text)
    if match:
        text = match.group(1)
    text = text.replace("<|endoftext|>", "")
    return text.strip()


def strict_clean(text: str) -> str:
    """Strict protocol: remove chat special tokens only and strip; every line of the answer is kept."""
    return _SPECIAL_TOKENS.sub("", text).strip()
