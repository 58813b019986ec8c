"""What a trainer must be told about an export: its manifest, ready-to-run snippets, and a config check.

Boxes of a pixel-frame dialect (qwen2.5-vl) are pixels of the image *as saved*; they stay right only
while the trainer feeds that image unresized. LLaMA-Factory shrinks an image above ``image_max_pixels``
(default 768 x 768) and enlarges one below ``image_min_pixels`` (default 32 x 32); ms-swift resizes by
``smart_resize`` within ``MAX_PIXELS`` / ``MIN_PIXELS`` (default 12,845,056 / 3,136). So every export
writes ``<stem>.export.json`` (for shards: ``export.json`` in their folder) naming its frame and what it
requires (``image_max_pixels`` / ``MAX_PIXELS`` >= the largest saved image, the minimums <= the
smallest), per-trainer snippets beside the data file that set those values, and
:func:`check_config` reads a LLaMA-Factory YAML or a swift command and says whether the boxes hold.
Grid dialects are relative to the image (any resize keeps them) and ms-swift's ``objects`` form is
rescaled by swift itself: neither requires a setting.
"""

from __future__ import annotations

import itertools
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medground.data.export.common import ExportOptions, FrameStats
from medground.grounding import JsonDialect, get_dialect
from medground.io import atomic_write_json, atomic_write_text

__all__ = [
    "LLAMAFACTORY_DEFAULTS",
    "SWIFT_DEFAULTS",
    "check_config",
    "manifest_path",
    "requirement_line",
    "write_manifest",
    "write_snippets",
]

LLAMAFACTORY_DEFAULTS = {"image_max_pixels": 768 * 768, "image_min_pixels": 32 * 32}  # hparams/model_args.py
SWIFT_DEFAULTS = {"MAX_PIXELS": 16384 * 28 * 28, "MIN_PIXELS": 4 * 28 * 28}  # qwen_vl_utils' defaults
# dialect -> (LLaMA-Factory template, a model that reads that dialect)
MODELS = {
    "qwen-vl-grid": ("qwen", "Qwen/Qwen-VL-Chat"),
    "qwen2-vl-norm1000": ("qwen2_vl", "Qwen/Qwen2-VL-7B-Instruct"),
    "qwen2.5-vl-pixels": ("qwen2_vl", "Qwen/Qwen2.5-VL-7B-Instruct"),
    "qwen3-vl-norm1000": ("qwen3_vl", "Qwen/Qwen3-VL-8B-Instruct"),
    "internvl-norm1000": ("intern_vl", "OpenGVLab/InternVL3-8B-hf"),
    "florence-2-loc": ("florence2", "microsoft/Florence-2-large"),
    "llava-1.5-square": ("llava", "llava-hf/llava-1.5-7b-hf"),
}
UNKNOWN_MODEL = (None, "MODEL")  # a dialect added later: the user names the template and model


def manifest_path(written: Path) -> Path:
    """The manifest of an export: ``<stem>.export.json`` beside a data file, ``export.json`` in a shard folder."""
    if written.suffix in (".json", ".jsonl"):
        return written.with_name(written.name.rsplit(".", 1)[0] + ".export.json")
    return written / "export.json"


def _requires(fmt: str, dialect: str, stats: FrameStats) -> dict[str, Any]:
    target = get_dialect(dialect)
    if fmt == "swift-objects":
        return {"QWENVL_BBOX_FORMAT": "new"} if isinstance(target, JsonDialect) else {}
    if target.relative:
        return {}
    return {
        "image_max_pixels": stats.largest,
        "image_min_pixels": stats.smallest,
        "MAX_PIXELS": stats.largest,
        "MIN_PIXELS": stats.smallest,
    }


def _frame(fmt: str, dialect: str) -> str:
    target = get_dialect(dialect)
    if fmt == "swift-objects":
        return "pixels of the image as built (bbox_type real): ms-swift scales them to the frame it feeds"
    if not target.relative:
        return "pixels of the image as saved: the trainer must feed it unresized"
    return "relative to the image (a [0, 1000] scale): any resize keeps them"


def write_manifest(
    written: Path, fmt: str, dialect: str, name: str, stats: FrameStats, options: ExportOptions
) -> dict[str, Any]:
    """Write and return the manifest of an export (see the module docstring)."""
    manifest = {
        "format": fmt,
        "dialect": dialect,
        "name": name,
        "data": written.name,
        "rows": stats.count,
        "boxes": _frame(fmt, dialect),
        "max_pixels": options.max_pixels,
        "largest_image_pixels": stats.largest,
        "smallest_image_pixels": stats.smallest,
        "requires": _requires(fmt, dialect, stats),
        "system": options.system,
        "image_metadata": "kept" if options.keep_metadata else "dropped",
    }
    atomic_write_json(manifest_path(written), manifest, fsync=False)
    return manifest


def requirement_line(manifest: dict[str, Any]) -> str:
    """One line for the user: the trainer settings the export's boxes need, or that they need none."""
    req = manifest["requires"]
    if "image_max_pixels" in req:
        return (
            f"{manifest['dialect']} boxes are pixels of images saved within {req['image_max_pixels']} pixels: "
            f"set image_max_pixels / MAX_PIXELS >= {req['image_max_pixels']} and image_min_pixels / MIN_PIXELS "
            f"<= {req['image_min_pixels']} (LLaMA-Factory's default 768*768 = 589824 suffices up to that "
            "size); a lower cap resizes the images and moves every box"
        )
    if req.get("QWENVL_BBOX_FORMAT"):
        return "swift objects in Qwen's JSON layout: run swift with QWENVL_BBOX_FORMAT=new; any MAX_PIXELS"
    return f"{manifest['dialect']} boxes are {manifest['boxes']}; no pixel setting needed"


def _llamafactory_yaml(folder: Path, name: str, manifest: dict[str, Any]) -> str:
    template, model = MODELS.get(manifest["dialect"], UNKNOWN_MODEL)
    req = manifest["requires"]
    max_pixels = req.get("image_max_pixels", LLAMAFACTORY_DEFAULTS["image_max_pixels"])
    min_pixels = min(req.get("image_min_pixels", 32 * 32), LLAMAFACTORY_DEFAULTS["image_min_pixels"])
    return (
        f"# LLaMA-Factory: llamafactory-cli train {name}.llamafactory.yaml\n"
        f"# {requirement_line(manifest)}\n"
        f"model_name_or_path: {model}\n"
        f"template: {template or 'TEMPLATE'}\n"
        f"image_max_pixels: {max_pixels}\n"
        f"image_min_pixels: {min_pixels}\n"
        "stage: sft\ndo_train: true\nfinetuning_type: lora\nlora_target: all\n"
        f"dataset_dir: {folder}\n"
        f"dataset: {name}\n"
        "cutoff_len: 4096\n"
        f"output_dir: saves/{name}\n"
        "per_device_train_batch_size: 1\ngradient_accumulation_steps: 8\nlearning_rate: 1.0e-4\n"
        "num_train_epochs: 3.0\nbf16: true\n"
    )


def _swift_command(folder: Path, data: Path, manifest: dict[str, Any]) -> str:
    _, model = MODELS.get(manifest["dialect"], UNKNOWN_MODEL)
    req = manifest["requires"]
    env = [f"ROOT_IMAGE_DIR={folder}"]
    if "MAX_PIXELS" in req:
        env += [
            f"MAX_PIXELS={req['MAX_PIXELS']}",
            f"MIN_PIXELS={min(req['MIN_PIXELS'], SWIFT_DEFAULTS['MIN_PIXELS'])}",
        ]
    if req.get("QWENVL_BBOX_FORMAT"):
        env.append(f"QWENVL_BBOX_FORMAT={req['QWENVL_BBOX_FORMAT']}")
    return (
        f"#!/bin/sh\n# ms-swift: {requirement_line(manifest)}\n"
        f"{' '.join(env)} swift sft --model {model} --dataset {shlex.quote(str(data))} "
        "--train_type lora --torch_dtype bfloat16 --num_train_epochs 3 --per_device_train_batch_size 1 "
        "--gradient_accumulation_steps 8 --learning_rate 1e-4 --output_dir output\n"
    )


def _llava_command(folder: Path, data: Path, manifest: dict[str, Any]) -> str:
    return (
        f"#!/bin/sh\n# LLaVA (haotian-liu/LLaVA), from its repository: {requirement_line(manifest)}\n"
        f"deepspeed llava/train/train_mem.py --deepspeed ./scripts/zero3.json --model_name_or_path "
        f"liuhaotian/llava-v1.5-7b --version v1 --data_path {shlex.quote(str(data))} --image_folder "
        f"{shlex.quote(str(folder))} --vision_tower openai/clip-vit-large-patch14-336 --mm_projector_type "
        "mlp2x_gelu --mm_vision_select_layer -2 --mm_use_im_start_end False --mm_use_im_patch_token False "
        "--image_aspect_ratio pad --bf16 True --output_dir ./checkpoints/medground --num_train_epochs 1\n"
    )


def _internvl_command(data: Path, manifest: dict[str, Any]) -> str:
    meta = data.with_name(data.name.removesuffix(".jsonl") + "_meta.json")
    return (
        f"#!/bin/sh\n# InternVL (OpenGVLab/InternVL, internvl_chat/): {requirement_line(manifest)}\n"
        "torchrun --nproc_per_node 1 internvl/train/internvl_chat_finetune.py --model_name_or_path "
        f"OpenGVLab/InternVL3-8B --conv_style internvl2_5 --meta_path {shlex.quote(str(meta))} "
        "--output_dir work_dirs/medground --dynamic_image_size True --use_thumbnail True --max_dynamic_patch 6 "
        "--force_image_size 448 --down_sample_ratio 0.5 --bf16 True --num_train_epochs 1\n"
    )


def write_snippets(written: Path, fmt: str, name: str, manifest: dict[str, Any]) -> list[Path]:
    """Ready-to-run trainer snippets beside a one-file export (absolute paths; edit the model and the
    hyper-parameters to taste, the pixel settings are the ones the boxes need). Returns their paths."""
    folder = written.parent.resolve()
    data = folder / written.name
    snippets: dict[str, str] = {}
    if fmt in ("sharegpt", "llamafactory"):
        snippets[f"{name}.llamafactory.yaml"] = _llamafactory_yaml(folder, name, manifest)
    if fmt in ("swift", "swift-objects"):
        snippets[f"{name}.swift.sh"] = _swift_command(folder, data, manifest)
    if fmt == "llava":
        snippets[f"{name}.llava.sh"] = _llava_command(folder, data, manifest)
    if fmt == "internvl":
        snippets[f"{name}.internvl.sh"] = _internvl_command(data, manifest)
    paths = []
    for file_name, text in snippets.items():
        atomic_write_text(folder / file_name, text, fsync=False)
        paths.append(folder / file_name)
    return paths


@dataclass(frozen=True)
class _Settings:
    trainer: str
    max_pixels: int
    min_pixels: int
    datasets: list[Path]  # manifests to check
    template: str | None = None
    bbox_format: str | None = None


def _llamafactory_settings(config: Path, folder: Path | None) -> _Settings:
    import yaml

    try:
        args = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{config}: not a readable YAML file ({error})") from error
    if not isinstance(args, dict) or "dataset" not in args:
        raise ValueError(f"{config}: no 'dataset' key; expected a LLaMA-Factory training YAML")
    where = folder or Path(args.get("dataset_dir", "data"))
    names = [n.strip() for n in str(args["dataset"]).split(",") if n.strip()]
    return _Settings(
        "LLaMA-Factory",
        int(args.get("image_max_pixels", LLAMAFACTORY_DEFAULTS["image_max_pixels"])),
        int(args.get("image_min_pixels", LLAMAFACTORY_DEFAULTS["image_min_pixels"])),
        [where / f"{n}.export.json" for n in names],
        template=args.get("template"),
    )


def _env_or_flag(words: list[str], env: str, flag: str) -> str | None:
    """The value of ``ENV=value`` or ``--flag value`` / ``--flag=value`` among a command's words."""
    for i, word in enumerate(words):
        for prefix in (f"{env}=", f"--{flag}="):
            if word.startswith(prefix):
                return word[len(prefix) :]
        if word == f"--{flag}" and i + 1 < len(words):
            return words[i + 1]
    return None


def _swift_settings(config: Path, folder: Path | None) -> _Settings:
    text = config.read_text(encoding="utf-8").replace("\\\n", " ")
    words = shlex.split(text, comments=True)
    if "--dataset" not in words:
        raise ValueError(
            f"{config}: no --dataset argument; expected an ms-swift command line (swift sft ...)"
        )
    start = words.index("--dataset") + 1
    data = list(itertools.takewhile(lambda word: not word.startswith("--"), words[start:]))
    base = folder or Path.cwd()
    return _Settings(
        "ms-swift",
        int(_env_or_flag(words, "MAX_PIXELS", "max_pixels") or SWIFT_DEFAULTS["MAX_PIXELS"]),
        int(_env_or_flag(words, "MIN_PIXELS", "min_pixels") or SWIFT_DEFAULTS["MIN_PIXELS"]),
        [manifest_path(base / d) for d in data],
        bbox_format=_env_or_flag(words, "QWENVL_BBOX_FORMAT", "bbox_format") or "legacy",
    )


def _verdict(settings: _Settings, manifest: dict[str, Any]) -> list[str]:
    """Problems of one export under ``settings`` (empty: the boxes hold)."""
    req, problems = manifest["requires"], []
    largest, smallest = req.get("image_max_pixels"), req.get("image_min_pixels")
    names = (
        ("image_max_pixels", "image_min_pixels")
        if settings.trainer == "LLaMA-Factory"
        else ("MAX_PIXELS", "MIN_PIXELS")
    )
    if largest is not None and settings.max_pixels < largest:
        problems.append(
            f"{names[0]} {settings.max_pixels} < {largest}: images are shrunk and the {manifest['dialect']} "
            f"boxes no longer match; set {names[0]}: {largest}, or re-export with --max-pixels {settings.max_pixels}"
        )
    if smallest is not None and settings.min_pixels > smallest:
        problems.append(
            f"{names[1]} {settings.min_pixels} > {smallest}: small images are enlarged and their boxes move; "
            f"set {names[1]} <= {smallest}"
        )
    if req.get("QWENVL_BBOX_FORMAT") and settings.bbox_format != req["QWENVL_BBOX_FORMAT"]:
        problems.append("the objects are laid out as Qwen's JSON: set QWENVL_BBOX_FORMAT=new")
    expected = MODELS.get(manifest["dialect"], UNKNOWN_MODEL)[0]
    if None not in (settings.template, expected) and settings.template != expected:
        problems.append(
            f"template {settings.template!r} does not read {manifest['dialect']} boxes; use {expected!r}"
        )
    return problems


def check_config(config: Path, folder: Path | None = None) -> tuple[bool, list[str]]:
    """Whether the boxes of the exports a trainer config names will be right: (all right, one line each).

    ``config``: a LLaMA-Factory YAML (``.yaml``/``.yml``: ``dataset``, ``dataset_dir``, ``template``,
    ``image_max_pixels``, ``image_min_pixels``) or a file holding an ms-swift command line (``MAX_PIXELS=``,
    ``MIN_PIXELS=``, ``QWENVL_BBOX_FORMAT=`` or ``--max_pixels``..., ``--dataset FILE...``). ``folder``:
    where the exports are (default: the config's ``dataset_dir``; for swift, paths as written). Raises
    ValueError for an unreadable config, FileNotFoundError for an export without a manifest.
    """
    config = Path(config)
    settings = (
        _llamafactory_settings(config, folder)
        if config.suffix in (".yaml", ".yml")
        else _swift_settings(config, folder)
    )
    lines, ok = [], True
    for path in settings.datasets:
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no medground export manifest for a dataset of {config}; export with "
                "`medground export` into that folder, or pass the export folder as DIR"
            )
        manifest = json.loads(path.read_text(encoding="utf-8"))
        problems = _verdict(settings, manifest)
        ok = ok and not problems
        status = "boxes right" if not problems else "BOXES WRONG: " + "; ".join(problems)
        lines.append(
            f"{manifest['name']} ({manifest['format']}, {manifest['dialect']}) under {settings.trainer}: {status}"
        )
    return ok, lines
