"""Structure masks -> region instances with tight boxes, position words and pairwise relations.

Frames: masks are (H, W) arrays of the saved image; boxes are absolute pixels, x1/y1 exclusive.
Position words describe the *image* (upper/lower, left/right as seen on screen). Where the display is
known to be radiological (slices medground cuts from volumes, or datasets whose meta.json says
``"display": "radiological"``), the image's left is the patient's right and the phrase says so; 2D
datasets come in either convention (the SA-Med2D demo slices show the left hip on the image's left),
so nothing is claimed about the patient's side there. Structure names that carry a side ("left hip")
always mean the patient's side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medground.types import Box, Region, StructureMask

__all__ = ["RegionConfig", "extract_regions", "position_phrase", "relation_phrase"]


@dataclass(frozen=True)
class RegionConfig:
    """How structure masks become region instances."""

    split_components: bool = True  # one instance per connected component (else one per structure mask)
    connectivity: int = 2  # 1: 4-neighbourhood, 2: 8-neighbourhood
    min_area_fraction: float = 0.00153  # drop components under this share of the image (SA-Med2D: 0.153%)
    min_instance_pixels: int = (
        10  # instance-map instances (annotator-made, e.g. nuclei) need this many pixels
    )

    def __post_init__(self) -> None:
        if self.connectivity not in (1, 2):
            raise ValueError(f"connectivity must be 1 or 2, got {self.connectivity}")
        if not 0.0 <= self.min_area_fraction < 1.0:
            raise ValueError(f"min_area_fraction must be in [0, 1), got {self.min_area_fraction}")


def _pieces(structure: StructureMask, config: RegionConfig) -> list[tuple[Box, np.ndarray]]:
    """(tight box, crop of the instance inside it) for each instance of one structure mask, in raster
    order of first pixel (connected components) or id order (instance maps)."""
    if structure.instance_map:
        ids, top, left, count = structure.mask, 0, 0, 0
    else:
        # label only the foreground's bounding window: lesions are often small in a large image
        rows, cols = np.flatnonzero(structure.mask.any(axis=1)), np.flatnonzero(structure.mask.any(axis=0))
        if rows.size == 0:
            return []
        top, left = int(rows[0]), int(cols[0])
        window_mask = structure.mask[top : rows[-1] + 1, left : cols[-1] + 1]
        count = 1
        if config.split_components:
            structure_el = ndimage.generate_binary_structure(2, config.connectivity)
            ids, count = ndimage.label(window_mask, structure=structure_el)
        if count == 1:  # one piece: its tight box is the window
            box = Box(left, top, left + window_mask.shape[1], top + window_mask.shape[0])
            return [(box, window_mask.astype(bool, copy=False))]
    pieces = []
    for value, window in enumerate(ndimage.find_objects(ids, max_label=count), start=1):
        if window is None:  # an id that does not occur
            continue
        r, c = window
        box = Box(left + c.start, top + r.start, left + c.stop, top + r.stop)
        pieces.append((box, ids[window] == value))
    return pieces


def extract_regions(
    structures: list[StructureMask], names: dict[str, str], radiological: bool, config: RegionConfig
) -> tuple[list[Region], list[str]]:
    """Region instances of every structure, and the raw keys of structures dropped whole as specks.

    ``names`` maps each raw key to its clean display name. Instances of one key are numbered from 0 in
    the order the structures come (a dataset's own instance files first) then in raster order.
    """
    regions: list[Region] = []
    next_instance: dict[str, int] = {}
    for structure in structures:
        height, width = structure.mask.shape
        min_area = (
            config.min_instance_pixels
            if structure.instance_map
            else max(1, int(np.ceil(config.min_area_fraction * height * width)))
        )
        for box, crop in _pieces(structure, config):
            area = int(np.count_nonzero(crop))
            if area < min_area:
                continue
            instance = next_instance.get(structure.name, 0)
            next_instance[structure.name] = instance + 1
            position = position_phrase(box.center, width, height, radiological)
            regions.append(Region(names[structure.name], structure.name, box, crop, instance, area, position))
    dropped = sorted({s.name for s in structures} - set(next_instance))
    return regions, dropped


def _third(value: float, size: int, words: tuple[str, str, str]) -> str:
    return words[min(2, int(3 * value / size))]


def position_phrase(box_center: tuple[float, float], width: int, height: int, radiological: bool) -> str:
    """Where a box centre lies on the image, in words: "in the upper left part of the image".

    Thirds of the width/height give left/central/right and upper/middle/lower. On a radiological
    display the patient's side is added: "... (the patient's right side in radiological view)".
    """
    x, y = box_center
    horizontal = _third(x, width, ("left", "central", "right"))
    vertical = _third(y, height, ("upper", "middle", "lower"))
    if horizontal == "central" and vertical == "middle":
        phrase = "in the centre of the image"
    elif horizontal == "central":
        phrase = f"in the {vertical} central part of the image"
    elif vertical == "middle":
        phrase = f"on the {horizontal} side of the image"
    else:
        phrase = f"in the {vertical} {horizontal} part of the image"
    if radiological and horizontal != "central":
        patient = "right" if horizontal == "left" else "left"
        phrase += f" (the patient's {patient} side in radiological view)"
    return phrase


def relation_phrase(a: Region, b: Region) -> str:
    """How region ``a`` lies relative to region ``b`` on the image: "above and to the left of".

    Containment and overlap come first ("inside", "overlapping"); otherwise the direction of the
    centre offset, naming an axis only when it is at least a third of the boxes' mean extent.
    """
    if a.box.x0 >= b.box.x0 and a.box.y0 >= b.box.y0 and a.box.x1 <= b.box.x1 and a.box.y1 <= b.box.y1:
        return "inside the box of"
    if b.box.x0 >= a.box.x0 and b.box.y0 >= a.box.y0 and b.box.x1 <= a.box.x1 and b.box.y1 <= a.box.y1:
        return "surrounding"
    (ax, ay), (bx, by) = a.box.center, b.box.center
    dx, dy = ax - bx, ay - by
    scale_x = (a.box.width + b.box.width) / 6.0
    scale_y = (a.box.height + b.box.height) / 6.0
    words = []
    if abs(dy) >= scale_y:
        words.append("above" if dy < 0 else "below")
    if abs(dx) >= scale_x:
        words.append("to the left of" if dx < 0 else "to the right of")
    if not words:
        return "overlapping"
    return " and ".join(words)
