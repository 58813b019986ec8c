"""The ``medground`` command: a thin layer that parses arguments and calls the library."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from medground import __version__
from medground.console import fail
from medground.data.sources import SOURCES, describe_layouts
from medground.eval.command import eval_command
from medground.grounding import DIALECTS
from medground.icl.commands import icl_eval_command, icl_train_command, segment_command
from medground.mllm.commands import ask_command, predict_command, train_command
from medground.tasks import TASKS, default_tasks

app = typer.Typer(
    name="medground",
    help="Refer, ground and segment in biomedical images: data engine, models, in-context segmentation, evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medground {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """medground: refer, ground and segment in biomedical images."""


@contextmanager
def _shown_warnings() -> Iterator[None]:
    """The library's warnings (unknown patients, modality conflicts, dialect mismatches) as plain
    ``warning: ...`` lines on stderr, once each, instead of Python's file:line form."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for text in dict.fromkeys(str(w.message) for w in caught):
                typer.secho(f"warning: {text}", fg=typer.colors.YELLOW, err=True)


@app.command(epilog="Layouts: " + describe_layouts("\n\n"))
def build(
    sources: Annotated[
        list[str],
        typer.Argument(
            help=f"Dataset folders or files; the layout is detected, or named as KIND:PATH "
            f"(KIND: {', '.join(SOURCES)}; layouts below)."
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (required unless --plan-only).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of phrasing, task choice and splits.")] = 0,
    workers: Annotated[int, typer.Option(help="Worker processes on this machine.")] = 1,
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Dask scheduler address (tcp://HOST:PORT) to run on a cluster; workers need the same file paths."
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted build in OUT (finished shards are kept).")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Delete a previous build in OUT first.")] = False,
    dialect: Annotated[str, typer.Option(help=f"Box dialect: {', '.join(DIALECTS)}.")] = "qwen-vl-grid",
    max_side: Annotated[
        int | None, typer.Option(help="Resize saved images so the longer side is at most this many pixels.")
    ] = None,
    shard_size: Annotated[int, typer.Option(help="Items (images or volumes) per output shard.")] = 32,
    masks: Annotated[
        str,
        typer.Option(
            help="Region masks as one 0/255 PNG file each (png) or as COCO RLE inside the records (rle: "
            "no mask files; for collections of millions of regions)."
        ),
    ] = "png",
    keep_image_metadata: Annotated[
        bool, typer.Option(help="Copy input images with their EXIF/XMP/PNG text (default: dropped).")
    ] = False,
    conversations: Annotated[int, typer.Option(help="Conversation records per image.")] = 1,
    turns: Annotated[int, typer.Option(help="Maximum question-answer turns per conversation.")] = 4,
    tasks: Annotated[
        str,
        typer.Option(
            help="Comma-separated tasks mixed in each conversation: "
            + "; ".join(
                f"{s.name}: {s.summary}{'' if s.default_mix else ' (opt-in)'}" for s in TASKS.values()
            )
            + "."
        ),
    ] = ",".join(default_tasks()),
    negative_rate: Annotated[
        float, typer.Option(help="Share of REC turns that ask about an absent structure.")
    ] = 0.15,
    modality: Annotated[
        str | None, typer.Option(help="Modality for sources that do not state one (ct, mr, x-ray, ...).")
    ] = None,
    mask_pattern: Annotated[
        str, typer.Option(help="folder layout: mask file pattern, {stem} = image stem.")
    ] = "{stem}*",
    structure: Annotated[
        str | None, typer.Option(help="folder layout: structure name of masks named like their image.")
    ] = None,
    planes: Annotated[
        str, typer.Option(help="Volumes: comma-separated slicing planes (axial, coronal, sagittal).")
    ] = "axial",
    slice_step: Annotated[int, typer.Option(help="Volumes: keep every n-th labelled slice.")] = 1,
    ct_window: Annotated[
        str, typer.Option(help="Volumes: CT window preset (soft-tissue = level 40 / width 400).")
    ] = "soft-tissue",
    min_area_fraction: Annotated[
        float, typer.Option(help="Drop components smaller than this share of the image (SA-Med2D: 0.00153).")
    ] = 0.00153,
    split_components: Annotated[
        bool, typer.Option(help="One region instance per connected component.")
    ] = True,
    llm_url: Annotated[
        str | None,
        typer.Option(
            help="OpenAI-compatible endpoint (http://host:port/v1) to rephrase turns; verified, cached."
        ),
    ] = None,
    llm_model: Annotated[str | None, typer.Option(help="Model name for --llm-url.")] = None,
    report: Annotated[bool, typer.Option(help="Write report/ with plots and overlays.")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    plan_only: Annotated[
        bool,
        typer.Option(
            help="List what would be built (items per source and split, unknown patients, rejected index "
            "rows) from the indexes alone, without reading a pixel or writing a file, and exit."
        ),
    ] = False,
) -> None:
    """Turn segmentation collections into refer-and-ground conversation records."""
    from medground.data.api import build_dataset
    from medground.data.generators import TaskConfig
    from medground.data.records import RecordConfig
    from medground.data.regions import RegionConfig
    from medground.data.sources import VolumeOptions

    if out is None and not plan_only:
        fail("--out is required (or pass --plan-only)")
    try:
        config = RecordConfig(
            seed=seed,
            dialect=dialect,
            max_side=max_side,
            conversations_per_image=conversations,
            masks=masks,
            keep_image_metadata=keep_image_metadata,
            regions=RegionConfig(split_components=split_components, min_area_fraction=min_area_fraction),
            tasks=TaskConfig(
                tasks=tuple(t.strip() for t in tasks.split(",")), max_turns=turns, negative_rate=negative_rate
            ),
        )
        volumes = VolumeOptions(
            planes=tuple(p.strip() for p in planes.split(",")), slice_step=slice_step, ct_window=ct_window
        )
        options = {"modality": modality, "mask_pattern": mask_pattern, "structure": structure}
        if plan_only:
            from medground.data.api import plan_dataset

            _print_plan(plan_dataset(sources, config, volume_options=volumes, source_options=options))
            return
        with _shown_warnings():
            manifest = build_dataset(
                sources,
                out,
                config,
                volume_options=volumes,
                source_options=options,
                workers=workers,
                scheduler=scheduler,
                shard_size=shard_size,
                resume=resume,
                overwrite=overwrite,
                report=report,
                progress=progress,
                llm_url=llm_url,
                llm_model=llm_model,
            )
    except (ValueError, RuntimeError, KeyError) as error:
        fail(str(error))
    counts = manifest["counts"]
    for name, items in counts["items"].items():
        if not counts["sources"].get(name):
            typer.secho(
                f"warning: {name}: none of its {items} items gave a record; see {out / 'skipped.jsonl'} "
                "(all regions below --min-area-fraction? wrong --modality?)",
                fg=typer.colors.YELLOW,
                err=True,
            )
    typer.echo(
        f"{counts['records']} records from {counts['images']} images ({counts['regions']} regions, "
        f"{counts['turns']} turns) in {out}; {counts['skipped']} inputs skipped, reasons in {out / 'skipped.jsonl'}"
    )


def _print_plan(planned: dict) -> None:
    """The plan as a table: one row per source and a total row; the sources' warnings on stderr."""
    for text in planned["warnings"]:
        typer.secho(f"warning: {text}", fg=typer.colors.YELLOW, err=True)
    header = ("source", "kind", "items", "train", "val", "test", "unknown patient", "rejected")
    rows = [
        (r["name"], r["kind"], r["items"], *r["splits"].values(), r["unknown_patient"], r["rejected"])
        for r in planned["sources"]
    ]
    rows.append(("total", "", *(sum(r[i] for r in rows) for i in range(2, len(header)))))
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo(
            "  ".join(
                str(v).ljust(w) if i < 2 else str(v).rjust(w)
                for i, (v, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
    typer.echo("plan only: no pixel read, nothing written")


@app.command()
def export(
    out_dir: Annotated[
        Path | None,
        typer.Argument(help="A build's output folder (with --check-config: the export folder, optional)."),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="llava, sharegpt, llamafactory, swift, swift-objects, internvl, or sharded: parquet, webdataset.",
        ),
    ] = None,
    dest: Annotated[
        Path | None,
        typer.Option(
            help="A folder, or a file name ending in the format's suffix (default: OUT_DIR/export/...)."
        ),
    ] = None,
    split: Annotated[str | None, typer.Option(help="Only this split (train, val, test).")] = None,
    dialect: Annotated[
        str | None,
        typer.Option(help=f"Write boxes in this dialect ({', '.join(DIALECTS)}; default: the build's)."),
    ] = None,
    max_pixels: Annotated[
        int,
        typer.Option(
            help="Pixel budget of images saved for qwen2.5-vl; the trainer's image_max_pixels / MAX_PIXELS "
            "must be at least the size printed (default: LLaMA-Factory's 768*768)."
        ),
    ] = 768 * 768,
    shard_size: Annotated[
        int | None,
        typer.Option(help="Samples per shard of parquet and webdataset exports (default 10000)."),
    ] = None,
    system: Annotated[
        str | None, typer.Option(help="A system prompt for every row (default: the trainer template's).")
    ] = None,
    keep_image_metadata: Annotated[
        bool, typer.Option(help="Copy images with their EXIF/XMP/PNG text (default: dropped).")
    ] = False,
    check_config: Annotated[
        Path | None,
        typer.Option(
            help="Check a LLaMA-Factory YAML or a file with an ms-swift command: will the exports it names "
            "get their boxes right? (exit 1 if not)"
        ),
    ] = None,
) -> None:
    """Write a build's records in the format of a trainer (LLaVA, ShareGPT, LLaMA-Factory, ms-swift,
    InternVL), or as Parquet / WebDataset shards that carry the images, streamed with bounded memory;
    prints the data path and the trainer settings its boxes need. --check-config checks a trainer config."""
    from medground.data import export as exports

    try:
        if check_config is not None:
            ok, lines = exports.check_config(check_config, out_dir)
            typer.echo("\n".join(lines))
            raise typer.Exit(0 if ok else 1)
        if out_dir is None or fmt is None:
            fail("give a build folder and --format (or --check-config FILE)")
        with _shown_warnings():
            written = exports.export(
                out_dir,
                fmt,
                dest,
                split,
                dialect,
                max_pixels,
                shard_size,
                system=system,
                keep_metadata=keep_image_metadata,
            )
        typer.echo(written)  # stdout: the path alone, for scripts
        manifest = json.loads(exports.manifest_path(written).read_text(encoding="utf-8"))
        typer.echo(exports.requirement_line(manifest), err=True)
    except (ValueError, KeyError, FileNotFoundError) as error:
        fail(str(error))


@app.command()
def report(out_dir: Annotated[Path, typer.Argument(help="A build's output folder.")]) -> None:
    """(Re)draw a build's report: counts per modality/task/split, box sizes, overlays."""
    from medground.data.report import write_report

    typer.echo(write_report(out_dir))


@app.command("check-splits")
def check_splits(
    builds: Annotated[
        list[Path], typer.Argument(help="Build folders (`medground build --out`), checked together.")
    ],
    near_duplicates: Annotated[
        bool,
        typer.Option(
            help="Also compare the saved images across splits: a perceptual hash plus a pixel check finds copies, "
            "JPEG re-encodes, resizes and crops of up to ~10% per side (slower: every image is read)."
        ),
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the findings as JSON instead of tables.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Check that no patient and no picture sits in two splits, within and across builds.

    Each patient key (the records' `case`) must sit in one split over all BUILDS.

    Images of unknown patient (`case` null, all in train) are covered by the near-duplicate check only.

    Exit status: 0 clean, 1 a leak was found, 2 unreadable input.
    """
    from rich.console import Console

    from medground.data.splits import check_splits as run_check
    from medground.data.splits import print_report

    try:
        report = run_check(builds, near_duplicates=near_duplicates, progress=progress and not as_json)
    except ValueError as error:
        fail(str(error))
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report, Console())
    if not report.clean:
        raise typer.Exit(1)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("runs/demo"),
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """The main job: build records from the bundled sample data and show the shipped models answering."""
    from medground.demo import run_demo

    with _shown_warnings():
        run_demo(out, say=typer.echo, progress=progress)


@app.command()
def serve(
    model: Annotated[
        str | None, typer.Option(help="Grounding model folder or hub id (default: the shipped bird-nano).")
    ] = None,
    icl_model: Annotated[
        Path | None, typer.Option(help="In-context model folder (default: the shipped weights).")
    ] = None,
    icl_size: Annotated[
        int | None,
        typer.Option(
            help="Working resolution of the in-context model (default: 64 for the shipped weights, for latency; a given --icl-model folder's own otherwise). 256 resolves thin structures (vessels, nuclei) better; /v1/segment then takes about 2x longer."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind; beyond loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    token: Annotated[
        str | None, typer.Option(envvar="MEDGROUND_TOKEN", help="Bearer token every request must carry.")
    ] = None,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body, in MiB.")] = 32.0,
    max_pixels: Annotated[int, typer.Option(help="Largest image (width x height) decoded.")] = 4096 * 4096,
    max_waiting: Annotated[int, typer.Option(help="Requests that may wait for the model (more: 503).")] = 8,
    wait_s: Annotated[float, typer.Option(help="Longest wait for the model, in seconds (then 503).")] = 60.0,
    max_batch: Annotated[
        int,
        typer.Option(
            min=1,
            help="Questions the local grounding model answers together in one batch (1: one at a time).",
        ),
    ] = 8,
    upstream: Annotated[
        str | None,
        typer.Option(
            help="Proxy mode: an OpenAI-compatible server (vLLM) answering grounding, http://HOST:PORT/v1."
        ),
    ] = None,
    upstream_model: Annotated[str | None, typer.Option(help="The model name the upstream serves.")] = None,
    upstream_family: Annotated[
        str, typer.Option(help="Box dialect of the upstream model: qwen2-vl, qwen2.5-vl or qwen3-vl.")
    ] = "qwen2.5-vl",
    upstream_min_pixels: Annotated[
        int, typer.Option(help="The upstream processor's min_pixels (the frame of qwen2.5-vl boxes).")
    ] = 56 * 56,
    upstream_max_pixels: Annotated[
        int, typer.Option(help="The upstream processor's max_pixels (the frame of qwen2.5-vl boxes).")
    ] = 12845056,
) -> None:
    """Serve the models over HTTP: OpenAI-compatible /v1/chat/completions, /v1/ground, /v1/segment.

    With --upstream, grounding and chat are answered by that server (a fine-tuned Qwen-VL under vLLM);
    segmentation stays local.
    """
    import ipaddress

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost
        loopback = False
    if not loopback and not token:
        fail(f"binding to {host} exposes the server beyond this machine: give --token (or MEDGROUND_TOKEN)")
    import uvicorn

    from medground.serve.app import ServeSettings, build_app

    settings = ServeSettings(
        token=token,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_pixels=max_pixels,
        max_waiting=max_waiting,
        wait_s=wait_s,
        max_batch=max_batch,
        # on loopback, only loopback names: a web page cannot reach it through a rebound DNS name
        allowed_hosts=(host, "127.0.0.1", "localhost", "::1") if loopback else None,
        browser_guard=token is None,  # no token (loopback): refuse what a web page could send unasked
    )
    if (upstream is None) != (upstream_model is None):
        fail("--upstream and --upstream-model go together (the server's URL and the model name it serves)")
    if upstream is not None and model is not None:
        fail("--model and --upstream exclude each other: grounding is local or upstream")
    try:
        proxy = None
        if upstream is not None and upstream_model is not None:
            from medground.serve.proxy import UpstreamGrounder

            proxy = UpstreamGrounder(
                upstream, upstream_model, upstream_family, upstream_min_pixels, upstream_max_pixels
            )
        application = build_app(model, icl_model, settings, proxy, icl_size)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    typer.echo(f"medground serving on http://{host}:{port} (OpenAI base URL http://{host}:{port}/v1)")
    from medground.serve.limits import UVICORN_OPTIONS

    uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False, **UVICORN_OPTIONS)


app.command("eval")(eval_command)
app.command("train")(train_command)
app.command("ask")(ask_command)
app.command("predict")(predict_command)
app.command("segment")(segment_command)
app.command("icl-train")(icl_train_command)
app.command("icl-eval")(icl_eval_command)

if __name__ == "__main__":
    app()
