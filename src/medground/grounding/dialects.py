"""Box dialects: each a class that owns all of its text (serialise, parse, span patterns, quantise).

| dialect    | text                                                                     | coordinates              |
|------------|--------------------------------------------------------------------------|--------------------------|
| qwen-vl    | ``<ref>liver</ref><box>(x0,y0),(x1,y1)</box>`` (BiRD, Med-GRIT)         | integers in [0, 1000)    |
| qwen2-vl   | ``<|object_ref_start|>liver<|object_ref_end|><|box_start|>(x0,y0),(x1,y1)<|box_end|>`` | integers in [0, 1000) |
| qwen2.5-vl | ``{"bbox_2d": [x0, y0, x1, y1], "label": "liver"}``                      | pixels of the resized input (smart_resize, factor 28) |
| qwen3-vl   | ``{"bbox_2d": [x0, y0, x1, y1], "label": "liver"}``                      | integers in [0, 1000)    |
| internvl   | ``<ref>liver</ref><box>[[x0, y0, x1, y1], ...]</box>``                   | integers in [0, 1000]    |

The [0, 1000) bin grid (Qwen): a pixel column ``x`` of an image ``w`` wide falls in bin
``floor(x * 1000 / w)``; a box's start is its first pixel and its end is its *last* pixel (x1 - 1), so a
full-width box ends at 999 on wide images. Parsing takes a bin back to its first pixel,
``ceil(n * w / 1000)``. So box -> text -> box is exact for sides up to 1000 px and text -> box -> text is
exact for sides of at least 1000 px; otherwise each is within one grid step.

The [0, 1000] edge scale (InternVL): box *edges* scaled by 1000 / size and rounded, ``round(x0 * 1000 / w)``
... ``round(x1 * 1000 / w)`` with x1 the exclusive edge (a full-width box ends at 1000); read back as
``round(n * w / 1000)``. That is InternVL's own definition: its chat-data docs normalise
``round(x / width * 1000)`` and its RefCOCO evaluation multiplies by ``width / 1000``.

Every consumer (the engine, the rewriter, training, export, evaluation) reaches box text only through a
:class:`Dialect`; a new syntax is one subclass and one line in :data:`DIALECTS`.
"""

from __future__ import annotations

import functools
import json
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

from medground.choices import unknown_choice
from medground.grounding.resize import smart_resize
from medground.types import Box

__all__ = ["DIALECTS", "Dialect", "Grounded", "InternVLDialect", "JsonDialect", "TagDialect", "get_dialect"]

GRID = 1000
_NUM = r"-?\d+(?:\.\d+)?"


@dataclass(frozen=True)
class Grounded:
    """A box parsed from text, in absolute pixels of the image; ``label`` is None when the text had none."""

    label: str | None
    box: Box


def _to_grid(value: int, size: int) -> int:
    """Pixel index (0..size-1) -> grid bin in [0, 1000)."""
    return min(GRID - 1, max(0, math.floor(value * GRID / size)))


def _from_grid(value: float, size: int) -> int:
    """Grid bin -> first pixel index of that bin, clipped to the image."""
    return min(size - 1, max(0, math.ceil(value * size / GRID)))


def box_to_grid(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """Canonical box -> (x0, y0, x1, y1) on the [0, 1000) grid (x1/y1 = bin of the last pixel)."""
    return (
        _to_grid(box.x0, width),
        _to_grid(box.y0, height),
        _to_grid(box.x1 - 1, width),
        _to_grid(box.y1 - 1, height),
    )


def box_from_grid(values: tuple[float, ...], width: int, height: int) -> Box:
    """(x0, y0, x1, y1) on the [0, 1000) grid -> canonical box (x1/y1 exclusive); corners may come swapped."""
    gx0, gy0, gx1, gy1 = values
    x0, x1 = sorted((_from_grid(gx0, width), _from_grid(gx1, width)))
    y0, y1 = sorted((_from_grid(gy0, height), _from_grid(gy1, height)))
    return Box(x0, y0, x1 + 1, y1 + 1)


def _edges_to_box(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> Box:
    """Continuous pixel edges (any order) -> canonical box, rounded and clipped, at least 1 px a side."""
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    cx0, cy0 = min(width - 1, max(0, round(x0))), min(height - 1, max(0, round(y0)))
    return Box(cx0, cy0, max(cx0 + 1, min(width, round(x1))), max(cy0 + 1, min(height, round(y1))))


class Dialect(ABC):
    """How one model family writes boxes in text, for an image ``width`` x ``height`` pixels.

    Canonical boxes are absolute pixels of that image, x1/y1 exclusive. A subclass implements the five
    abstract members; ``render``, ``has_box`` and ``fixed_size`` then work for it unchanged.
    """

    name: str

    @abstractmethod
    def box(self, box: Box, width: int, height: int) -> str:
        """A box alone, e.g. to point at a region in a question."""

    @abstractmethod
    def ground(self, label: str, boxes: list[Box], width: int, height: int) -> str:
        """A label grounded at one or more boxes (one grounded group)."""

    @abstractmethod
    def parse(self, text: str, width: int, height: int) -> list[Grounded]:
        """Every box in ``text``, in reading order, as canonical boxes of a width x height image."""

    @abstractmethod
    def quantise(self, box: Box, width: int, height: int) -> Box:
        """The box as this dialect's text gives it back, ``parse(box(...))``, computed without the text."""

    @property
    @abstractmethod
    def span_pattern(self) -> re.Pattern[str]:
        """Regex of one grounded group in text: an optional label and one or more boxes, nothing else.

        ``parse`` of a match gives exactly that group's boxes; text between matches holds no box. Used to
        re-render boxes in another dialect and to find them for masking and evaluation.
        """

    @property
    def protected_pattern(self) -> re.Pattern[str]:
        """Regex of the strings a rewrite must copy verbatim (each reference and each box); default: spans."""
        return self.span_pattern

    @property
    def bare_pattern(self) -> re.Pattern[str]:
        """Regex of coordinates a model may write without their delimiters; default: none."""
        return re.compile(r"(?!)")

    def box_contents(self, text: str) -> list[str]:
        """The raw text of every box in ``text`` (what a protocol reads before parsing numbers)."""
        return [m.group(0) for m in self.span_pattern.finditer(text)]

    def has_box(self, text: str) -> bool:
        """Whether ``text`` holds a box of this dialect, delimited or bare."""
        return bool(self.span_pattern.search(text) or self.bare_pattern.search(text))

    def render(self, found: list[Grounded], width: int, height: int) -> str:
        """Labelled boxes -> text; consecutive boxes with one label become one grounded group."""
        parts: list[str] = []
        i = 0
        while i < len(found):
            label = found[i].label
            j = i
            while j < len(found) and found[j].label == label:
                j += 1
            boxes = [g.box for g in found[i:j]]
            if label is None:
                parts.append(", ".join(self.box(b, width, height) for b in boxes))
            else:
                parts.append(self.ground(label, boxes, width, height))
            i = j
        return " ".join(parts)

    def for_processor(self, factor: int, min_pixels: int, max_pixels: int) -> Dialect:
        """This dialect as a model whose processor resizes by ``smart_resize(factor, min_pixels, max_pixels)``
        writes it. Grid dialects do not depend on the resize: the same dialect."""
        return self

    def fixed_size(self, width: int, height: int, max_pixels: int) -> tuple[int, int]:
        """(width, height) to save an image at so that this dialect's numbers hold in the fed image.

        Grid dialects are relative to the image, so any size works: the image is kept. Pixel-frame
        dialects override this with a size their model's resize leaves unchanged.
        """
        return width, height


def _pairs(capture: bool) -> str:
    """Regex of ``(x0,y0),(x1,y1)`` with optional spaces; ``capture``: one group per number."""
    n = f"({_NUM})" if capture else f"(?:{_NUM})"
    pair = rf"\(\s*{n}\s*,\s*{n}\s*\)"
    return rf"\s*{pair}\s*,\s*{pair}\s*"


@functools.cache
def _tag_patterns(
    ref_open: str, ref_close: str, box_open: str, box_close: str
) -> tuple[re.Pattern[str], ...]:
    """(one box with its optional label, one grounded group, protected pieces, box contents) of a tag dialect."""
    ref = re.escape(ref_open) + r"(.*?)" + re.escape(ref_close)
    box = re.escape(box_open) + _pairs(capture=True) + re.escape(box_close)
    plain_box = re.escape(box_open) + _pairs(capture=False) + re.escape(box_close)
    one = re.compile(f"(?:{ref})?\\s*{box}", re.DOTALL)
    plain_ref = re.escape(ref_open) + r".*?" + re.escape(ref_close)
    group = re.compile(f"(?:{plain_ref}\\s*)?{plain_box}(?:\\s*{plain_box})*", re.DOTALL)
    pieces = re.compile(f"{plain_ref}|{re.escape(box_open)}.*?{re.escape(box_close)}", re.DOTALL)
    contents = re.compile(re.escape(box_open) + r"(.*?)" + re.escape(box_close))
    return one, group, pieces, contents


@dataclass(frozen=True)
class TagDialect(Dialect):
    """Tag-delimited ``(x0,y0),(x1,y1)`` boxes on the [0, 1000) bin grid: Qwen-VL (BiRD) and Qwen2-VL.

    A box without its own reference takes the label of the last reference before it (``<ref>hip</ref>
    <box>..</box><box>..</box>`` is two hips).
    """

    name: str
    ref_open: str
    ref_close: str
    box_open: str
    box_close: str

    def box(self, box: Box, width: int, height: int) -> str:
        x0, y0, x1, y1 = box_to_grid(box, width, height)
        return f"{self.box_open}({x0},{y0}),({x1},{y1}){self.box_close}"

    def quantise(self, box: Box, width: int, height: int) -> Box:
        return box_from_grid(box_to_grid(box, width, height), width, height)

    def ground(self, label: str, boxes: list[Box], width: int, height: int) -> str:
        if not boxes:
            raise ValueError(f"cannot ground {label!r} without a box")
        return f"{self.ref_open}{label}{self.ref_close}" + "".join(self.box(b, width, height) for b in boxes)

    def _patterns(self) -> tuple[re.Pattern[str], ...]:
        return _tag_patterns(self.ref_open, self.ref_close, self.box_open, self.box_close)

    @property
    def span_pattern(self) -> re.Pattern[str]:
        return self._patterns()[1]

    @property
    def protected_pattern(self) -> re.Pattern[str]:
        """Each reference ``<ref>..</ref>`` and each box ``<box>..</box>`` on its own, whatever is inside."""
        return self._patterns()[2]

    @property
    def bare_pattern(self) -> re.Pattern[str]:
        """Integer corner pairs ``(x0,y0),(x1,y1)`` without box tags (BiRD's fallback for untagged answers)."""
        return re.compile(r"\(\d+,\d+\),\(\d+,\d+\)")

    def box_contents(self, text: str) -> list[str]:
        """What stands between each box's tags, unparsed (BiRD's ``<box>(.*?)</box>``)."""
        return self._patterns()[3].findall(text)

    def parse(self, text: str, width: int, height: int) -> list[Grounded]:
        found: list[Grounded] = []
        label: str | None = None
        for match in self._patterns()[0].finditer(text):
            if match.group(1) is not None:
                label = match.group(1).strip()
            coords = tuple(float(match.group(i)) for i in range(2, 6))
            found.append(Grounded(label, box_from_grid(coords, width, height)))
        return found


_JSON_ITEM = r"\{[^{}]*\"bbox_2d\"[^{}]*\}"


@dataclass(frozen=True)
class JsonDialect(Dialect):
    """JSON boxes ``{"bbox_2d": [...], "label": ...}``: Qwen2.5-VL (resized-input pixels) and Qwen3-VL (grid).

    Several boxes of one label are a JSON list of such objects. ``absolute``: numbers are pixels of the
    model's input after ``smart_resize(factor, min_pixels, max_pixels)``; else the [0, 1000) bin grid.
    """

    name: str
    absolute: bool
    factor: int = 28
    min_pixels: int = 56 * 56
    max_pixels: int = 14 * 14 * 4 * 1280

    def _scale(self, width: int, height: int) -> tuple[float, float]:
        """Model units per image pixel along x and y."""
        if not self.absolute:
            return GRID / width, GRID / height
        rh, rw = smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)
        return rw / width, rh / height

    def _coords(self, box: Box, width: int, height: int) -> list[int]:
        if not self.absolute:
            return list(box_to_grid(box, width, height))
        sx, sy = self._scale(width, height)
        return [
            round(box.x0 * sx),
            round(box.y0 * sy),
            max(round(box.x1 * sx), round(box.x0 * sx) + 1),
            max(round(box.y1 * sy), round(box.y0 * sy) + 1),
        ]

    def _box(self, values: list[float], width: int, height: int) -> Box:
        if not self.absolute:
            return box_from_grid(tuple(values), width, height)
        sx, sy = self._scale(width, height)
        return _edges_to_box(values[0] / sx, values[1] / sy, values[2] / sx, values[3] / sy, width, height)

    def box(self, box: Box, width: int, height: int) -> str:
        return json.dumps({"bbox_2d": self._coords(box, width, height)})

    def quantise(self, box: Box, width: int, height: int) -> Box:
        return self._box([float(v) for v in self._coords(box, width, height)], width, height)

    def ground(self, label: str, boxes: list[Box], width: int, height: int) -> str:
        if not boxes:
            raise ValueError(f"cannot ground {label!r} without a box")
        items = [{"bbox_2d": self._coords(b, width, height), "label": label} for b in boxes]
        return json.dumps(items[0] if len(items) == 1 else items, ensure_ascii=False)

    @property
    def span_pattern(self) -> re.Pattern[str]:
        return re.compile(rf"\[\s*{_JSON_ITEM}(?:\s*,\s*{_JSON_ITEM})*\s*\]|{_JSON_ITEM}")

    @property
    def protected_pattern(self) -> re.Pattern[str]:
        """Each ``{"bbox_2d": ...}`` object on its own."""
        return re.compile(_JSON_ITEM)

    def box_contents(self, text: str) -> list[str]:
        return self.protected_pattern.findall(text)

    def parse(self, text: str, width: int, height: int) -> list[Grounded]:
        found: list[Grounded] = []
        for match in self.protected_pattern.finditer(text):
            try:
                item = json.loads(match.group(0))
                values = [float(v) for v in item["bbox_2d"]]
                if len(values) != 4:
                    continue
                label = item.get("label")
                found.append(
                    Grounded(str(label) if label is not None else None, self._box(values, width, height))
                )
            except (ValueError, TypeError, KeyError, OverflowError):
                continue
        return found

    def for_processor(self, factor: int, min_pixels: int, max_pixels: int) -> Dialect:
        if not self.absolute:
            return self
        return replace(self, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)

    def fixed_size(self, width: int, height: int, max_pixels: int) -> tuple[int, int]:
        """For pixel-frame numbers: the ``smart_resize`` of the image within ``max_pixels`` (and the model's).

        Both sides are multiples of ``factor`` and the area is at most ``max_pixels``, so ``smart_resize``
        of that size, with any limit at or above it, is that size again: the model's (and a trainer's)
        resize then leaves an image saved at this size unchanged, and pixel numbers hold in the fed image.
        """
        if not self.absolute:
            return width, height
        rh, rw = smart_resize(height, width, self.factor, self.min_pixels, min(max_pixels, self.max_pixels))
        return rw, rh


_INTERNVL_BOX = rf"\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]"
_INTERNVL_PLAIN_BOX = rf"\[\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*\]"
_INTERNVL_TAG = rf"<box>\s*\[\s*{_INTERNVL_PLAIN_BOX}(?:\s*,\s*{_INTERNVL_PLAIN_BOX})*\s*\]\s*</box>"


@dataclass(frozen=True)
class InternVLDialect(Dialect):
    """InternVL's ``<ref>liver</ref><box>[[x0, y0, x1, y1], ...]</box>``: box edges on a [0, 1000] scale.

    Numbers are ``round(edge * 1000 / size)`` of the box's edges (x1/y1 exclusive), as InternVL's chat-data
    docs define them; several boxes of one label share one ``<box>`` tag.
    """

    name: str = "internvl"

    @staticmethod
    def _numbers(box: Box, width: int, height: int) -> list[int]:
        return [
            round(box.x0 * GRID / width),
            round(box.y0 * GRID / height),
            round(box.x1 * GRID / width),
            round(box.y1 * GRID / height),
        ]

    @staticmethod
    def _box(values: list[float], width: int, height: int) -> Box:
        x0, y0, x1, y1 = values
        return _edges_to_box(
            x0 * width / GRID, y0 * height / GRID, x1 * width / GRID, y1 * height / GRID, width, height
        )

    def _list(self, boxes: list[Box], width: int, height: int) -> str:
        return "<box>[" + ", ".join(str(self._numbers(b, width, height)) for b in boxes) + "]</box>"

    def box(self, box: Box, width: int, height: int) -> str:
        return self._list([box], width, height)

    def ground(self, label: str, boxes: list[Box], width: int, height: int) -> str:
        if not boxes:
            raise ValueError(f"cannot ground {label!r} without a box")
        return f"<ref>{label}</ref>" + self._list(boxes, width, height)

    def quantise(self, box: Box, width: int, height: int) -> Box:
        return self._box([float(v) for v in self._numbers(box, width, height)], width, height)

    @property
    def span_pattern(self) -> re.Pattern[str]:
        return re.compile(rf"(?:<ref>.*?</ref>\s*)?{_INTERNVL_TAG}(?:\s*{_INTERNVL_TAG})*", re.DOTALL)

    @property
    def protected_pattern(self) -> re.Pattern[str]:
        """Each reference ``<ref>..</ref>`` and each ``<box>..</box>`` on its own, whatever is inside."""
        return re.compile(r"<ref>.*?</ref>|<box>.*?</box>", re.DOTALL)

    @property
    def bare_pattern(self) -> re.Pattern[str]:
        """A ``[[x0, y0, x1, y1]]`` list without its tags."""
        return re.compile(rf"\[\s*{_INTERNVL_PLAIN_BOX}")

    def parse(self, text: str, width: int, height: int) -> list[Grounded]:
        found: list[Grounded] = []
        for match in re.finditer(rf"(?:<ref>(.*?)</ref>\s*)?({_INTERNVL_TAG})", text, re.DOTALL):
            label = match.group(1).strip() if match.group(1) is not None else None
            for coords in re.finditer(_INTERNVL_BOX, match.group(2)):
                values = [float(coords.group(i)) for i in range(1, 5)]
                found.append(Grounded(label, self._box(values, width, height)))
        return found


DIALECTS: dict[str, Dialect] = {
    "qwen-vl": TagDialect("qwen-vl", "<ref>", "</ref>", "<box>", "</box>"),
    "qwen2-vl": TagDialect(
        "qwen2-vl", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>"
    ),
    "qwen2.5-vl": JsonDialect("qwen2.5-vl", absolute=True, factor=28, max_pixels=12845056),
    "qwen3-vl": JsonDialect("qwen3-vl", absolute=False, factor=32),
    "internvl": InternVLDialect("internvl"),
}


def get_dialect(name: str) -> Dialect:
    """The dialect registered under ``name``; an unknown name lists the known ones and the closest."""
    if name in DIALECTS:
        return DIALECTS[name]
    raise KeyError(unknown_choice("dialect", name, DIALECTS))
