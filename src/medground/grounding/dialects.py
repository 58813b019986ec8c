"""Box dialects of the Qwen-VL family, each a serialise/parse pair over canonical boxes.

| dialect    | text                                                                     | coordinates              |
|------------|--------------------------------------------------------------------------|--------------------------|
| qwen-vl    | ``<ref>liver</ref><box>(x0,y0),(x1,y1)</box>`` (BiRD, Med-GRIT)         | integers in [0, 1000)    |
| qwen2-vl   | ``<|object_ref_start|>liver<|object_ref_end|><|box_start|>(x0,y0),(x1,y1)<|box_end|>`` | integers in [0, 1000) |
| qwen2.5-vl | ``{"bbox_2d": [x0, y0, x1, y1], "label": "liver"}``                      | pixels of the resized input (smart_resize, factor 28) |
| qwen3-vl   | ``{"bbox_2d": [x0, y0, x1, y1], "label": "liver"}``                      | integers in [0, 1000)    |

The [0, 1000) grid: a pixel column ``x`` of an image ``w`` wide falls in bin ``floor(x * 1000 / w)``;
a box's start is its first pixel and its end is its *last* pixel (x1 - 1), so a full-width box ends
at 999 on wide images. Parsing takes a bin back to its first pixel, ``ceil(n * w / 1000)``. So
box -> text -> box is exact for sides up to 1000 px and text -> box -> text is exact for sides of at
least 1000 px; otherwise each is within one grid step.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass

from medground.grounding.resize import smart_resize
from medground.types import Box

__all__ = ["DIALECTS", "Dialect", "Grounded", "JsonDialect", "TagDialect", "get_dialect"]

GRID = 1000


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


class Dialect:
    """Serialise labelled boxes into model text and parse them back.

    ``width``/``height`` always describe the image the canonical boxes refer to.
    """

    name: str

    def box(self, box: Box, width: int, height: int) -> str:
        """A box alone, e.g. to point at a region in a question."""
        raise NotImplementedError

    def quantise(self, box: Box, width: int, height: int) -> Box:
        """The box as this dialect's text gives it back, ``parse(box(...))``, computed without the text."""
        raise NotImplementedError

    def ground(self, label: str, boxes: list[Box], width: int, height: int) -> str:
        """A label grounded at one or more boxes."""
        raise NotImplementedError

    def parse(self, text: str, width: int, height: int) -> list[Grounded]:
        """Every box in ``text``, in reading order, as canonical boxes of a width x height image."""
        raise NotImplementedError


@functools.cache
def _tag_pattern(ref_open: str, ref_close: str, box_open: str, box_close: str) -> re.Pattern[str]:
    ref = re.escape(ref_open) + r"(.*?)" + re.escape(ref_close)
    box = (
        re.escape(box_open)
        + r"\s*\((-?[\d.]+)\s*,\s*(-?[\d.]+)\)\s*,\s*\((-?[\d.]+)\s*,\s*(-?[\d.]+)\)\s*"
        + re.escape(box_close)
    )
    return re.compile(f"(?:{ref})?\\s*{box}", re.DOTALL)


@dataclass(frozen=True)
class TagDialect(Dialect):
    """Tag-delimited boxes on the [0, 1000) grid: Qwen-VL (BiRD) and Qwen2-VL."""

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

    def _pattern(self) -> re.Pattern[str]:
        return _tag_pattern(self.ref_open, self.ref_close, self.box_open, self.box_close)

    def parse(self, text: str, width: int, height: int) -> list[Grounded]:
        found: list[Grounded] = []
        label: str | None = None
        for match in self._pattern().finditer(text):
            if match.group(1) is not None:
                label = match.group(1).strip()
            coords = tuple(float(match.group(i)) for i in range(2, 6))
            try:
                found.append(Grounded(label, box_from_grid(coords, width, height)))
            except ValueError:
                continue
        return found


@dataclass(frozen=True)
class JsonDialect(Dialect):
    """JSON boxes ``{"bbox_2d": [...], "label": ...}``: Qwen2.5-VL (resized-input pixels) and Qwen3-VL (grid)."""

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
        x0, x1 = sorted((values[0] / sx, values[2] / sx))
        y0, y1 = sorted((values[1] / sy, values[3] / sy))
        cx0, cy0 = min(width - 1, max(0, round(x0))), min(height - 1, max(0, round(y0)))
        return Box(cx0, cy0, max(cx0 + 1, min(width, round(x1))), max(cy0 + 1, min(height, round(y1))))

    def box(self, box: Box, width: int, height: int) -> str:
        return json.dumps({"bbox_2d": self._coords(box, width, height)})

    def quantise(self, box: Box, width: int, height: int) -> Box:
        return self._box([float(v) for v in self._coords(box, width, height)], width, height)

    def ground(self, label: str, boxes: list[Box], width: int, height: int) -> str:
        if not boxes:
            raise ValueError(f"cannot ground {label!r} without a box")
        items = [{"bbox_2d": self._coords(b, width, height), "label": label} for b in boxes]
        return json.dumps(items[0] if len(items) == 1 else items, ensure_ascii=False)

    def parse(self, text: str, width: int, height: int) -> list[Grounded]:
        found: list[Grounded] = []
        for match in re.finditer(r"\{[^{}]*\"bbox_2d\"[^{}]*\}", text):
            try:
                item = json.loads(match.group(0))
                values = [float(v) for v in item["bbox_2d"]]
                if len(values) != 4:
                    continue
                label = item.get("label")
                found.append(
                    Grounded(str(label) if label is not None else None, self._box(values, width, height))
                )
            except (ValueError, TypeError, KeyError):
                continue
        return found


DIALECTS: dict[str, Dialect] = {
    "qwen-vl": TagDialect("qwen-vl", "<ref>", "</ref>", "<box>", "</box>"),
    "qwen2-vl": TagDialect(
        "qwen2-vl", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>"
    ),
    "qwen2.5-vl": JsonDialect("qwen2.5-vl", absolute=True, factor=28, max_pixels=12845056),
    "qwen3-vl": JsonDialect("qwen3-vl", absolute=False, factor=32),
}


def get_dialect(name: str) -> Dialect:
    """The dialect registered under ``name``; an unknown name lists the known ones and the closest."""
    if name in DIALECTS:
        return DIALECTS[name]
    import difflib

    close = difflib.get_close_matches(name, list(DIALECTS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise KeyError(f"unknown dialect {name!r}; known: {', '.join(DIALECTS)}.{hint}")
