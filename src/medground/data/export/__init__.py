"""Export the data engine's records to the training formats of common fine-tuning tools, in any dialect.

One module per kind of output: :mod:`.files` (llava, sharegpt, llamafactory, swift, swift-objects,
internvl: one JSON/JSONL file), :mod:`.shards` (parquet, webdataset: images inside the shards),
:mod:`.trainers` (the manifest, per-trainer snippets, ``check_config``), :mod:`.hf` (the records with
HF datasets), :mod:`.common` (records in, each rendered for a target dialect and frame).

Every image path is relative to the data file's folder and the image lies inside that folder (hard
linked from the build when its bytes are the ones to export, else written), so the folder can be moved:
LLaVA's ``image_folder``, LLaMA-Factory's ``dataset_dir``, ms-swift's ``ROOT_IMAGE_DIR``, InternVL's
``root``. Every format keeps exactly one ``<image>`` placeholder, in the first user turn, and every row
carries its record's ``id``. Boxes are re-rendered from the records' canonical boxes in the chosen dialect
(default: the record's), so LLM-rewritten turns convert too. For a pixel-frame dialect (qwen2.5-vl) each
image is saved at the dialect's ``fixed_size`` within ``max_pixels`` (default 768 x 768, LLaMA-Factory's
default ``image_max_pixels``); the manifest and the snippets name the trainer settings that keep it
unresized. Image metadata (EXIF, XMP, PNG text) is dropped unless ``keep_metadata``. Files get the
umask's mode; records are streamed.
"""

from __future__ import annotations

from pathlib import Path

from medground.choices import unknown_choice
from medground.data.export.common import (
    DEFAULT_MAX_PIXELS,
    ExportOptions,
    export_dialect,
    iter_records,
    shard_paths,
)
from medground.data.export.files import EXPORTERS, FILE_SUFFIXES, check_pairing, write_file_export
from medground.data.export.hf import load_hf_dataset, record_features
from medground.data.export.shards import (
    DEFAULT_SHARD_SIZE,
    PARQUET_FEATURES,
    SHARDED_FORMATS,
    export_shards,
)
from medground.data.export.trainers import (
    check_config,
    manifest_path,
    requirement_line,
    write_manifest,
    write_snippets,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_SHARD_SIZE",
    "EXPORTERS",
    "FORMATS",
    "PARQUET_FEATURES",
    "SHARDED_FORMATS",
    "ExportOptions",
    "check_config",
    "export",
    "iter_records",
    "load_hf_dataset",
    "manifest_path",
    "record_features",
    "requirement_line",
    "shard_paths",
]

FORMATS = [*EXPORTERS, *SHARDED_FORMATS]
_DATASET_PREFIX = {"llamafactory": "medground"}  # default stem prefix where it is not the format's name


def _destination(root: Path, fmt: str, dest: Path | None, stem: str) -> Path:
    """The data file (one-file formats) or shard folder to write.

    ``dest`` is a folder unless it ends with the format's suffix (``out/qwen2.5-vl`` is a folder);
    default: ``root/export/`` (llamafactory: ``root/export/llamafactory/``; shards: ``root/export/<stem>/``).
    """
    if fmt in SHARDED_FORMATS:
        return Path(dest) if dest is not None else root / "export" / stem
    suffix = FILE_SUFFIXES[fmt]
    if dest is not None and Path(dest).name.endswith(suffix) and not Path(dest).is_dir():
        return Path(dest)
    folder = (
        Path(dest)
        if dest is not None
        else root / "export" / ("llamafactory" if fmt == "llamafactory" else "")
    )
    return folder / f"{stem}{suffix}"


def export(
    out_dir: Path,
    fmt: str,
    dest: Path | None = None,
    split: str | None = None,
    dialect: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    shard_size: int | None = None,
    *,
    system: str | None = None,
    keep_metadata: bool = False,
) -> Path:
    """Write the records of build folder ``out_dir`` in format ``fmt``; return the data file (or shard folder).

    Default names carry the dialect: ``<fmt>_<dialect>[_<split>].json(l)`` (llamafactory: ``medground_...``,
    also its dataset name); shards go to ``<fmt>_<dialect>[_<split>]/``. ``dest`` as in ``_destination``.
    ``split``: only records of that split. ``dialect``: write boxes in this dialect (default: each
    record's own); ``max_pixels``: the pixel budget of images saved for a pixel-frame dialect.
    ``shard_size``: samples per shard (sharded formats only; default DEFAULT_SHARD_SIZE). ``system``: a
    system prompt turn in every row. ``keep_metadata``: copy images with their EXIF/XMP/PNG text.
    Beside the data writes its manifest (``manifest_path``) and per-trainer snippets. Warns when boxes
    are written in ``qwen-vl`` tags.

    Raises KeyError for an unknown format or dialect, ValueError when no record matches, ``max_pixels``
    is too small, ``shard_size`` is given for a one-file format or is below 1, ``system`` is given for
    a format whose loader cannot take it, or the dialect cannot be right for the format (``check_pairing``); FileNotFoundError for a missing image.
    """
    if fmt not in FORMATS:
        raise KeyError(unknown_choice("export format", fmt, FORMATS))
    if max_pixels < 28 * 28 * 4:
        raise ValueError(f"max_pixels must be at least {28 * 28 * 4} (a 56 x 56 image), got {max_pixels}")
    if shard_size is not None and fmt not in SHARDED_FORMATS:
        raise ValueError(f"shard_size applies to {' and '.join(SHARDED_FORMATS)} only, not to {fmt!r}")
    if shard_size is not None and shard_size < 1:
        raise ValueError(f"shard_size must be at least 1 sample, got {shard_size}")
    root = Path(out_dir)
    target = export_dialect(root, split, dialect)  # KeyError for an unknown dialect
    check_pairing(fmt, target)
    options = ExportOptions(target if dialect else None, max_pixels, system, keep_metadata)
    stem = f"{_DATASET_PREFIX.get(fmt, fmt)}_{target}{'_' + split if split else ''}"
    written = _destination(root, fmt, dest, stem)
    name = written.name.removesuffix(FILE_SUFFIXES.get(fmt, "")) if fmt not in SHARDED_FORMATS else stem
    if fmt in SHARDED_FORMATS:
        stats = export_shards(root, fmt, written, split, options, shard_size or DEFAULT_SHARD_SIZE)
    else:
        stats = write_file_export(root, fmt, written, name, split, options)
    manifest = write_manifest(written, fmt, target, name, stats, options)
    if fmt not in SHARDED_FORMATS:
        write_snippets(written, fmt, name, manifest)
    return written
