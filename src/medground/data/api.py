"""The data engine's entry point for people and the CLI: open sources, build, report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medground.data.engine import build, plan
from medground.data.records import RecordConfig
from medground.data.sources import Source, VolumeOptions, open_source

__all__ = ["build_dataset", "plan_dataset"]


def build_dataset(
    sources: list[str | Path],
    out: str | Path,
    config: RecordConfig | None = None,
    *,
    volume_options: VolumeOptions | None = None,
    source_options: dict[str, Any] | None = None,
    workers: int = 1,
    scheduler: Any = None,
    shard_size: int = 32,
    resume: bool = False,
    overwrite: bool = False,
    report: bool = True,
    progress: bool = True,
    llm_url: str | None = None,
    llm_model: str | None = None,
) -> dict:
    """Build records from dataset folders (``PATH`` or ``KIND:PATH``) into ``out``; returns the manifest.

    With ``llm_url`` and ``llm_model`` every turn is rephrased by that OpenAI-compatible endpoint, cached
    under ``out/llm_cache``; a rewrite that drops or changes a name or a box is refused and the original kept.
    """
    if (llm_url is None) != (llm_model is None):
        raise ValueError("LLM rewriting needs both --llm-url and --llm-model")
    rewriter = None
    if llm_url is not None:
        from medground.data.rewrite import Rewriter

        rewriter = Rewriter(llm_url, llm_model, Path(out) / "llm_cache")
    opened = _open(sources, volume_options, source_options)
    manifest = build(
        opened,
        out,
        config or RecordConfig(),
        workers=workers,
        scheduler=scheduler,
        shard_size=shard_size,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        rewriter=rewriter,
    )
    if report:
        from medground.data.report import write_report

        write_report(Path(out))
    return manifest


def plan_dataset(
    sources: list[str | Path],
    config: RecordConfig | None = None,
    *,
    volume_options: VolumeOptions | None = None,
    source_options: dict[str, Any] | None = None,
) -> dict:
    """What ``build_dataset`` would build from ``sources``, without reading a pixel or writing a file:
    items per source and per split, unknown-patient items and rejected index rows (see :func:`plan`)."""
    return plan(_open(sources, volume_options, source_options), config or RecordConfig())


def _open(
    sources: list[str | Path], volume_options: VolumeOptions | None, source_options: dict[str, Any] | None
) -> list[Source]:
    options = dict(source_options or {})
    return [open_source(spec, options=volume_options or VolumeOptions(), **options) for spec in sources]
