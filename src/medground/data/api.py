"""The data engine's entry point for people and the CLI: open sources, build, report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medground.data.engine import build
from medground.data.records import RecordConfig
from medground.data.sources import VolumeOptions, open_source

__all__ = ["build_dataset"]


def build_dataset(
    sources: list[str | Path], out: str | Path, config: RecordConfig | None = None, *,
    volume_options: VolumeOptions | None = None, source_options: dict[str, Any] | None = None,
    workers: int = 1, scheduler: Any = None, shard_size: int = 32, resume: bool = False,
    overwrite: bool = False, report: bool = True, progress: bool = True,
) -> dict:
    """Build records from dataset folders (``PATH`` or ``KIND:PATH``) into ``out``; returns the manifest."""
    options = dict(source_options or {})
    opened = [open_source(spec, options=volume_options or VolumeOptions(), **options) for spec in sources]
    manifest = build(opened, out, config or RecordConfig(), workers=workers, scheduler=scheduler,
                     shard_size=shard_size, resume=resume, overwrite=overwrite, progress=progress)
    if report:
        from medground.data.report import write_report

        write_report(Path(out))
    return manifest
