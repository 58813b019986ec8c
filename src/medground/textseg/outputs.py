"""``segment --text NAME`` with no examples: write each query's mask and overlay, and say when it was not found."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from medground.icl.outputs import is_nifti, output_stems, to_uint8_rgb
from medground.io import read_image, write_png
from medground.textseg.segmenter import WEIGHTS, TextSegmenter
from medground.viz import fill_masks

__all__ = ["segment_text_files"]


def segment_text_files(
    queries: Sequence[Path],
    out: Path,
    text: str,
    echo: Callable[[str], None] = print,
    weights: Path = WEIGHTS,
) -> list[Path]:
    """Each 2D query -> ``out/<stem>.png`` (0/255; all 0 when the structure is not found) and
    ``out/<stem>_overlay.png`` (``weights``: the head's folder); one line per query through ``echo`` (found or not, presence probability).
    Raises ValueError for a volume query (text-only on volumes: ``--text-engine icl``)."""
    volumes = [str(q) for q in queries if is_nifti(Path(q))]
    if volumes:
        raise ValueError(
            f"{volumes[0]}: text-only segmentation with --text-engine litemedsam takes 2D images; "
            "for volumes use --text-engine icl (the in-context model's text rule)"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seg = TextSegmenter(weights)
    written: list[Path] = []
    for query, stem in zip(map(Path, queries), output_stems(queries), strict=True):
        image = read_image(query)
        result = seg.segment(image, text)
        write_png(out / f"{stem}.png", result.mask)
        write_png(out / f"{stem}_overlay.png", fill_masks(to_uint8_rgb(image), [result.mask], alpha=0.45))
        written += [out / f"{stem}.png", out / f"{stem}_overlay.png"]
        verdict = "found" if result.found else "not found (empty mask written)"
        echo(
            f"{query}: {text!r} {verdict}; presence {result.probability:.3f} (threshold {result.threshold:.3f})"
        )
    return written
