"""Shared fixtures of the evaluation tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def one_meteor_process() -> Iterator[None]:
    """All eval tests share one METEOR Java process, started on first use.

    Its start-up (loading METEOR's paraphrase tables, about 15 s) would otherwise be paid by every
    scorer; the program that scores is the same jar, so numbers are unchanged. COCOEvalCap (the parity
    reference) gets the same process.
    """
    from pycocoevalcap import eval as coco_eval_module
    from pycocoevalcap.meteor import meteor as meteor_module

    original = meteor_module.Meteor
    started: list[object] = []

    def shared() -> object:
        if not started:
            started.append(original())
        return started[0]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(meteor_module, "Meteor", shared)
        patch.setattr(coco_eval_module, "Meteor", shared)
        yield
    started.clear()
