"""Dialects whose labels have no delimiters (Florence-2, LLaVA-1.5): the label is the text before the boxes."""

from __future__ import annotations

import re
from abc import abstractmethod
from typing import ClassVar

from medground.grounding.dialects import Dialect, Grounded
from medground.types import Box

__all__ = ["UndelimitedDialect"]


class UndelimitedDialect(Dialect):
    """A dialect whose labels have no delimiters, e.g. Florence-2's ``liver<loc_..><loc_..><loc_..><loc_..>``.

    A grounded group is its label written as plain text, then its boxes. Reading back, a group's label
    is the text between the previous box group (or the previous ``>``, or the start) and its first box,
    stripped of spaces and ``,;:`` (None when that leaves nothing): Florence-2's own rule, which takes
    the ``[^<]+`` before the location tokens. So ``span_pattern`` holds boxes only: converting to
    another dialect keeps a label as plain text and writes the boxes unlabelled.

    A subclass sets ``box_pattern`` (one box, a capture group per number x0, y0, x1, y1) and
    ``run_pattern`` (one or more boxes as written together) and gives ``decode`` (numbers -> box) and
    ``box``; ``label_separator`` goes between a label and its boxes.
    """

    labels_delimited: ClassVar[bool] = False
    label_separator: ClassVar[str] = ""
    box_pattern: ClassVar[re.Pattern[str]]
    run_pattern: ClassVar[re.Pattern[str]]

    @property
    def span_pattern(self) -> re.Pattern[str]:
        """One or more boxes written together (``run_pattern``); the label is outside the span."""
        return self.run_pattern

    @abstractmethod
    def decode(self, values: tuple[float, ...], width: int, height: int) -> Box:
        """The four numbers of one box -> canonical box of a width x height image."""

    def quantise(self, box: Box, width: int, height: int) -> Box:
        return self.parse(self.box(box, width, height), width, height)[0].box

    def ground(self, label: str, boxes: list[Box], width: int, height: int) -> str:
        if not boxes:
            raise ValueError(f"cannot ground {label!r} without a box")
        return (
            label + self.label_separator + self.box_separator.join(self.box(b, width, height) for b in boxes)
        )

    def parse(self, text: str, width: int, height: int) -> list[Grounded]:
        found: list[Grounded] = []
        end = 0
        for run in self.span_pattern.finditer(text):
            label = text[end : run.start()].rsplit(">", 1)[-1].strip(" \t\r\n,;:") or None
            for match in self.box_pattern.finditer(run.group(0)):
                values = tuple(float(match.group(i)) for i in range(1, 5))
                found.append(Grounded(label, self.decode(values, width, height)))
            end = run.end()
        return found
