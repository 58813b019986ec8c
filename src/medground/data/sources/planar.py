"""Loading one 2D image with its masks into a Sample: shared by every 2D source.

Masks come as files or already decoded (COCO RLE / polygons); both get the same checks at the
boundary: each file decodes, every mask has the image's height and width, mask values are ones the
dataset declares, and at least one mask has foreground. Each failure becomes a Rejected entry naming
the file (or the decoded mask's origin) and the reason; the image is kept as long as one mask is usable.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from medground.data.sources.base import Item, LoadResult, Source, labelled
from medground.io import ReadError, read_image_as_stored, read_mask
from medground.types import Rejected, Sample, StructureMask

__all__ = ["MaskSpec", "PlanarSource", "load_planar"]


@dataclass(frozen=True)
class MaskSpec:
    """One mask of an image: a file, or an array already decoded from an index (``decoded``).

    ``path`` is the mask file, or for a decoded mask where it came from (``instances.json#annotation 17``),
    named in rejections. ``decoded``: (H, W) integer array in the image's pixel grid, read like a file's
    pixels. ``values`` maps stored values to raw structure keys; ``None`` means a binary mask (any
    non-zero value is the structure ``name``). ``instance_map``: the values are instance ids of ``name``.
    ``instance`` is the dataset's own instance index (SA-Med2D ``_001``), if any.
    """

    path: str
    name: str
    values: tuple[tuple[int, str], ...] | None = None
    instance_map: bool = False
    instance: int | None = None
    decoded: np.ndarray | None = field(default=None, compare=False, repr=False)


def _names(spec: MaskSpec) -> list[str]:
    """Raw keys a mask may hold: its structure, or every value a label map declares."""
    return [spec.name] if spec.values is None or spec.instance_map else sorted({n for _, n in spec.values})


def _structures(spec: MaskSpec, mask: np.ndarray) -> list[StructureMask] | str:
    """Structure masks in one mask file, or the reason it cannot be used."""
    if spec.instance_map:
        return [StructureMask(spec.name, mask, spec.instance, instance_map=True)]
    foreground = mask != 0
    if spec.values is None:
        return [StructureMask(spec.name, foreground, spec.instance)]
    values = mask[foreground]  # only the foreground pixels: usually a small share
    small = values.dtype in (np.uint8, np.uint16)  # counting beats sorting for 8/16-bit labels
    present = np.flatnonzero(np.bincount(values)) if small else np.unique(values)
    declared = dict(spec.values)
    unknown = [int(v) for v in present if int(v) not in declared]
    if unknown:
        known = sorted(declared)
        return f"mask has values {unknown[:10]} not declared in labels.json (declared: 0, {known}); add them to labels.json"
    if len(present) == 1:
        return [StructureMask(declared[int(present[0])], foreground, spec.instance)]
    return [StructureMask(declared[int(v)], mask == v, spec.instance) for v in present]


def load_planar(
    item: Item, image_path: str, masks: list[MaskSpec], **sample_fields: object
) -> Iterator[LoadResult]:
    """Yield the Sample of one image and a Rejected entry per unusable mask (or the image itself)."""
    try:
        image, as_stored = read_image_as_stored(image_path)
    except ReadError as error:
        yield Rejected(image_path, f"image unreadable: {error.reason}", item.source)
        return
    height, width = image.shape[:2]
    structures: list[StructureMask] = []
    unsure: set[str] = set()  # keys of rejected masks: not known to be absent
    for spec in masks:
        try:
            mask = read_mask(spec.path) if spec.decoded is None else spec.decoded
        except ReadError as error:
            unsure.update(_names(spec))
            yield Rejected(spec.path, f"mask unreadable: {error.reason}", item.source)
            continue
        if mask.shape != (height, width):
            unsure.update(_names(spec))
            yield Rejected(
                spec.path,
                f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image size {width}x{height} "
                f"({image_path}); masks must be on the image's pixel grid",
                item.source,
            )
            continue
        found = _structures(spec, mask)
        if isinstance(found, str):
            unsure.update(_names(spec))
            yield Rejected(spec.path, found, item.source)
            continue
        if not any(s.mask.any() for s in found):
            yield Rejected(spec.path, "mask is empty (no foreground pixel)", item.source)
            continue
        structures.extend(found)
    if not structures:
        yield Rejected(image_path, "no usable mask for this image", item.source)
        return
    meta: dict = {"file": image_path} if as_stored else {}
    if unsure:
        meta["unsure"] = sorted(unsure)
    yield Sample(
        id=f"{item.source}/{item.key}",
        image=image,
        case=item.case,
        structures=structures,
        source=item.source,
        meta=meta,
        **sample_fields,
    )


class PlanarSource(Source):
    """What the 2D file sources share: an item is one image file with its masks (``payload["image"]``,
    ``payload["masks"]``), loaded by :func:`load_planar` and told its labelling protocol.

    Sample fields come from the source (``modality``, ``plane``, ``body_region``, ``display``: its
    meta.json), except where the item states its own (SA-Med2D reads modality and plane per file name).
    """

    modality: str | None
    plane: str | None = None
    body_region: str | None
    display: str | None

    def load(self, item: Item) -> Iterator[LoadResult]:
        payload = item.payload
        results = load_planar(
            item,
            payload["image"],
            payload["masks"],
            modality=payload.get("modality", self.modality),
            plane=payload.get("plane", self.plane),
            body_region=self.body_region,
            display=self.display,
        )
        yield from labelled(results, payload)
