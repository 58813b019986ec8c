"""File-level inference for ``medground segment``: read support/query files, segment, write PNG or NIfTI."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medground.icl.preprocess import to_rgb_float
from medground.icl.segmenter import InContextSegmenter, support_from_volume
from medground.io import read_image, write_png
from medground.viz import fill_masks

__all__ = ["is_nifti", "parse_support", "segment_files", "stem", "to_uint8_rgb"]

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
) -> list[Path]:
    """Segment each query file; write ``out/<stem>.png`` + ``out/<stem>_overlay.png`` (2D) or
    ``out/<stem>.nii.gz`` (NIfTI query, slice by slice, affine and header kept). Returns written paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seg = InContextSegmenter.from_pretrained(model)
    pairs: list = list(support)
    if support_volume is not None:
        pairs += support_from_volume(*support_volume, modality=modality)
    ctx = seg.encode_support(pairs, text)
    written: list[Path] = []
    for query in map(Path, queries):
        if is_nifti(query):
            target = out / f"{stem(query)}.nii.gz"
            seg.segment_volume(query, context=ctx, out=target, threshold=threshold, modality=modality)
            written.append(target)
            continue
        image = read_image(query)
        mask = seg.segment(image, context=ctx) >= threshold
        write_png(out / f"{stem(query)}.png", mask)
        write_png(out / f"{stem(query)}_overlay.png", fill_masks(to_uint8_rgb(image), [mask], alpha=0.45))
        written += [out / f"{stem(query)}.png", out / f"{stem(query)}_overlay.png"]
    return written
