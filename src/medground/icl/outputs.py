"""File-level inference for ``medground segment``: read support/query files, segment, write PNG or NIfTI."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medground.icl.preprocess import to_rgb_float
from medground.icl.segmenter import InContextSegmenter, support_from_volume
from medground.io import read_image, write_png
from medground.viz import fill_masks

__all__ = ["is_nifti", "output_stems", "parse_support", "segment_files", "stem", "to_uint8_rgb"]

_NIFTI = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    return str(path).lower().endswith(_NIFTI)


def stem(path: Path) -> str:
    """File name without its (possibly double) suffix: a/b.nii.gz -> b, a/c.png -> c."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def output_stems(queries: Sequence[Path]) -> list[str]:
    """One distinct output stem per query: its file stem, or, where several queries share a stem
    (a/scan.png, b/scan.png, c/scan.nii.gz), the stem plus "__" and as many trailing parent folder names
    as tell them apart ("scan__a", "scan__b"); queries that are the same file repeated keep a counter."""
    stems = [stem(q) for q in queries]
    out = list(stems)
    for name in set(stems):
        group = [i for i, s in enumerate(stems) if s == name]
        if len(group) == 1:
            continue
        parents = [Path(queries[i]).resolve().parent.parts for i in group]
        depth = max(len(p) for p in parents)
        for level in range(1, depth + 1):
            tails = ["_".join(p[-level:]) for p in parents]
            if len(set(tails)) == len(tails):
                break
        for n, (i, tail) in enumerate(zip(group, tails, strict=True)):
            out[i] = f"{name}__{tail}" if len(set(tails)) == len(tails) else f"{name}__{n + 1}"
    return out


def parse_support(spec: str) -> tuple[Path, Path]:
    """ "IMG:MASK" -> (Path(IMG), Path(MASK)); split at the last colon; both files must exist."""
    if ":" not in spec:
        raise ValueError(
            f"--support expects IMG:MASK, got {spec!r}; e.g. --support scan1.png:scan1_liver.png"
        )
    image, mask = spec.rsplit(":", 1)
    for part in (image, mask):
        if not Path(part).is_file():
            raise FileNotFoundError(f"--support {spec!r}: file {part!r} does not exist")
    return Path(image), Path(mask)


def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """Any image the segmenter reads (gray, RGB(A), 16-bit) as (H, W, 3) uint8 for drawing."""
    return (to_rgb_float(image) * 255).round().clip(0, 255).astype(np.uint8)


def segment_files(
    queries: Sequence[Path],
    out: Path,
    support: Sequence[tuple[Path, Path]] = (),
    text: str | None = None,
    model: Path | None = None,
    support_volume: tuple[Path, Path] | None = None,
    threshold: float = 0.5,
    modality: str = "mr",
    box: tuple[int, int, int, int] | None = None,
    size: int | None = None,
    box_engine: str = "boxseg",
) -> list[Path]:
    """Segment each query file; write ``out/<stem>.png`` + ``out/<stem>_overlay.png`` (2D) or
    ``out/<stem>.nii.gz`` (NIfTI query, slice by slice, affine and header kept), with stems made distinct
    by :func:`output_stems` when queries share one. ``box`` ([x0, y0, x1, y1], one 2D query): segment
    the object in it (supports/text, if any, add the in-context map). ``size``: the model's working
    resolution (default: the weights' own; see ``segmenter.load_pretrained``). ``box_engine``: what
    segments a box alone (``segmenter.BOX_ENGINES``). Returns written paths."""
    if box is not None and (len(queries) != 1 or is_nifti(Path(queries[0]))):
        raise ValueError("a box prompt takes exactly one 2D query image (one box for one query)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seg = InContextSegmenter.from_pretrained(model, size=size, box_engine=box_engine)
    pairs: list = list(support)
    if support_volume is not None:
        pairs += support_from_volume(*support_volume, modality=modality)
    ctx = seg.encode_support(pairs, text) if pairs or text or box is None else None
    written: list[Path] = []
    for query, name in zip(map(Path, queries), output_stems(queries), strict=True):
        if is_nifti(query):
            target = out / f"{name}.nii.gz"
            seg.segment_volume(query, context=ctx, out=target, threshold=threshold, modality=modality)
            written.append(target)
            continue
        image = read_image(query)
        mask = seg.segment(image, context=ctx, box=box) >= threshold
        write_png(out / f"{name}.png", mask)
        write_png(out / f"{name}_overlay.png", fill_masks(to_uint8_rgb(image), [mask], alpha=0.45))
        written += [out / f"{name}.png", out / f"{name}_overlay.png"]
    return written
