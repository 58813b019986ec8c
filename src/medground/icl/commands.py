"""Thin typer commands for in-context segmentation: they parse options and call the library.

The lead registers them on the main app::

    app.command("segment")(segment_command)
    app.command("icl-train")(icl_train_command)
    app.command("icl-eval")(icl_eval_command)

They also run standalone: ``python -m medground.icl.commands icl-train --help``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medground.console import fail

__all__ = ["app", "icl_eval_command", "icl_train_command", "segment_command"]


def segment_command(
    query: Annotated[
        list[Path],
        typer.Option(
            "--query", help="Query image (PNG/JPEG/TIFF) or volume (.nii/.nii.gz); repeat for many."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Output folder: <stem>.png (0/255) + <stem>_overlay.png, or <stem>.nii.gz; queries sharing a stem get <stem>__<parent folder>.",
        ),
    ],
    support: Annotated[
        list[str] | None,
        typer.Option(
            "--support", help="Support example IMG:MASK (mask foreground = value > 0); repeat for k examples."
        ),
    ] = None,
    text: Annotated[
        str | None,
        typer.Option(
            "--text", help="Structure name or description, e.g. 'left kidney'; alone it allows k = 0."
        ),
    ] = None,
    support_volume: Annotated[
        Path | None,
        typer.Option("--support-volume", help="Support volume (.nii.gz); needs --support-labels."),
    ] = None,
    support_labels: Annotated[
        Path | None,
        typer.Option("--support-labels", help="Label volume for --support-volume (foreground = label > 0)."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model", help="Model folder (config.json + model.safetensors); default: shipped weights."
        ),
    ] = None,
    threshold: Annotated[
        float, typer.Option("--threshold", help="Probability threshold for the binary mask.")
    ] = 0.5,
    modality: Annotated[
        str,
        typer.Option("--modality", help="Volumes: 'ct' (soft-tissue window) or anything else (percentiles)."),
    ] = "mr",
    box: Annotated[
        str | None,
        typer.Option(
            "--box",
            help="x0,y0,x1,y1 in pixels of the (one, 2D) query, x1/y1 exclusive: segment the object in the box; alone it allows k = 0 without text.",
        ),
    ] = None,
    box_model: Annotated[
        str,
        typer.Option(
            "--box-model",
            help="What segments a --box alone: 'boxseg' (the box model trained here, default) or 'litemedsam' (the pretrained LiteMedSAM; below boxseg and the ellipse on the collection's folds, bench/RESULTS.md). A box with supports or --text always uses boxseg.",
        ),
    ] = "boxseg",
    size: Annotated[
        int | None,
        typer.Option(
            "--size",
            help="Working resolution of the in-context model (RidgeSeg); default: the one in its config.json (shipped weights: 256, chosen on their training data; trained at 64). 64 is about 10x faster per query; larger sizes resolve thin structures (vessels, nuclei).",
        ),
    ] = None,
    text_engine: Annotated[
        str,
        typer.Option(
            "--text-engine",
            help="What segments --text alone (no examples, no box): 'icl' (the in-context model's text rule; default) or 'litemedsam' (a name head on the LiteMedSAM encoder that answers 'not found' with an empty mask; opt-in until it beats the rule on the same test split).",
        ),
    ] = "icl",
) -> None:
    """Segment query images or volumes from a few (image, mask) examples, a text prompt and/or a box."""
    from medground.icl.outputs import parse_support, segment_files

    if (support_volume is None) != (support_labels is None):
        raise typer.BadParameter("--support-volume and --support-labels go together; give both or neither")
    pairs = [parse_support(s) for s in support or []]
    volume = (support_volume, support_labels) if support_volume is not None else None
    if text_engine not in ("litemedsam", "icl"):
        raise typer.BadParameter(f"--text-engine: expected 'litemedsam' or 'icl', got {text_engine!r}")
    if text and not pairs and volume is None and box is None and text_engine == "litemedsam":
        from medground.textseg.outputs import segment_text_files

        try:
            written = segment_text_files(query, out, text, echo=typer.echo)
        except (FileNotFoundError, ValueError) as error:
            fail(str(error))
        typer.echo(f"wrote {len(written)} files to {out}")
        return
    try:
        written = segment_files(
            query, out, pairs, text, model, volume, threshold, modality, _parse_box(box), size, box_model
        )
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    typer.echo(f"wrote {len(written)} files to {out}")


def _parse_box(spec: str | None) -> tuple[int, int, int, int] | None:
    """ "x0,y0,x1,y1" -> four ints; BadParameter for anything else."""
    if spec is None:
        return None
    parts = spec.split(",")
    try:
        values = tuple(int(float(p)) for p in parts)
    except ValueError:
        values = ()
    if len(parts) != 4 or len(values) != 4:
        raise typer.BadParameter(f"--box expects x0,y0,x1,y1 (four numbers), got {spec!r}")
    return values  # type: ignore[return-value]


def icl_train_command(
    data: Annotated[
        list[Path],
        typer.Argument(
            help="Data-engine output folders and/or datasets in any layout medground build reads (or their parent)."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", help="Output model folder (also holds checkpoint/, losses.json, loss.png)."),
    ] = Path("runs/icl/ridgeseg"),
    held_out: Annotated[
        list[str] | None,
        typer.Option(
            "--held-out",
            help="Source/dataset name to exclude from training, with its near-identical domain group (medground.icl.protocol); repeat. An unknown name is an error.",
        ),
    ] = None,
    architecture: Annotated[
        str,
        typer.Option(
            "--architecture",
            help="ridgeseg (ours, default), poolseg (ours, earlier) or universeg (baseline).",
        ),
    ] = "ridgeseg",
    size: Annotated[int, typer.Option("--size", help="Working resolution in pixels (64 or 128).")] = 64,
    widths: Annotated[
        str, typer.Option("--widths", help="PoolSeg only: channels per scale, comma separated.")
    ] = "16,32,48,64",
    steps: Annotated[int, typer.Option("--steps", help="Optimisation steps.")] = 1500,
    episodes: Annotated[int, typer.Option("--episodes", help="Episodes (segmentation tasks) per step.")] = 4,
    max_k: Annotated[int, typer.Option("--max-k", help="Largest support size drawn during training.")] = 8,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 2e-3,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads.")] = 1,
    device: Annotated[str, typer.Option("--device", help="torch device: cpu or cuda.")] = "cpu",
    max_minutes: Annotated[
        float, typer.Option("--max-minutes", help="Stop and save after this many minutes (0 = no limit).")
    ] = 0.0,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Ignore an existing checkpoint instead of resuming.")
    ] = False,
) -> None:
    """Episodic training over segmentation tasks (one structure of one dataset) plus synthetic ones; resumes."""
    from medground.icl.episodes import EpisodeConfig
    from medground.icl.train import TrainConfig, train

    cfg = TrainConfig(
        data=[str(p) for p in data],
        out=str(out),
        held_out=list(held_out or []),
        architecture=architecture,
        size=size,
        widths=[int(w) for w in widths.split(",")],
        steps=steps,
        lr=lr,
        seed=seed,
        threads=threads,
        device=device,
        max_minutes=max_minutes,
        episodes=EpisodeConfig(episodes=episodes, max_k=max_k),
    )
    typer.echo(f"model written to {train(cfg, resume=not fresh)}")


def icl_eval_command(
    data: Annotated[
        list[Path],
        typer.Argument(
            help="Data-engine output folders and/or datasets in any layout medground build reads (or their parent)."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", help="Report folder: results.jsonl, summary.json, report.md, dice_vs_k.png."),
    ],
    k: Annotated[
        str, typer.Option("--k", help="Support sizes, comma separated; tasks must qualify for the largest.")
    ] = "1,2,4,8",
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="HELD:FOLDER (a model trained without the comma-separated sources HELD) or FOLDER (held-out = what its meta.json did not train on, by domain group); repeat per fold. A UniverSeg folder (icl-train --architecture universeg) is scored as baseline (c). Default: the shipped weights.",
        ),
    ] = None,
    draws: Annotated[
        int, typer.Option("--draws", help="Draws per task: a query patient (cycling) and a support order.")
    ] = 5,
    queries: Annotated[int, typer.Option("--queries", help="Queries per draw, from the query patient.")] = 4,
    unet_steps: Annotated[
        int,
        typer.Option(
            "--unet-steps", help="Training steps of the from-scratch U-Net baseline (b); 0 skips it."
        ),
    ] = 60,
    adapt_steps: Annotated[
        int,
        typer.Option(
            "--adapt-steps",
            help="Also score our model fine-tuned this many steps on each support set (0 = off).",
        ),
    ] = 0,
    in_distribution: Annotated[
        bool,
        typer.Option("--in-distribution", help="Also score the sources the model trained on (own table)."),
    ] = False,
    bootstrap: Annotated[
        int, typer.Option("--bootstrap", help="Bootstrap resamples of query patients (95% intervals).")
    ] = 1000,
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    size: Annotated[
        int | None,
        typer.Option(
            "--size",
            help="Working resolution of our model (RidgeSeg only); default: the one in its config.json.",
        ),
    ] = None,
) -> None:
    """Dice and HD95 against k on held-out sources, patients apart, vs the support-prior and U-Net baselines."""
    from medground.icl.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(
        data=[str(p) for p in data],
        out=str(out),
        ks=[int(v) for v in k.split(",")],
        models=list(model or []),
        draws=draws,
        queries=queries,
        unet_steps=unet_steps,
        seed=seed,
        adapt_steps=adapt_steps,
        in_distribution=in_distribution,
        bootstrap=bootstrap,
        threads=threads,
        size=size,
    )
    try:
        written = evaluate(cfg)
    except ValueError as error:
        fail(str(error))
    typer.echo(f"report written to {written}")


app = typer.Typer(help="In-context segmentation commands (standalone entry point).", no_args_is_help=True)
app.command("segment")(segment_command)
app.command("icl-train")(icl_train_command)
app.command("icl-eval")(icl_eval_command)

if __name__ == "__main__":
    app()
