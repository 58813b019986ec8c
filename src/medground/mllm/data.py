"""Records of the data engine -> chat turns in a family's dialect -> token ids with assistant-only labels.

A record (see the data engine) holds an image path, its size, conversations with boxes in the
record's ``dialect`` and ``regions`` with canonical boxes. Boxes are found and parsed with the record's
dialect, snapped to the exact canonical box of the region they denote, and re-serialised in the target
dialect (:func:`medground.grounding.reground_text`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medground.grounding import Dialect, get_dialect, reground_text
from medground.io import read_image
from medground.mllm.positions import frame_mover, framed_size, position_rewrites, rewrite_phrases
from medground.mllm.processor import IMAGE_PAD, IMAGE_PLACEHOLDER, SYSTEM_PROMPT, VISION_END, VISION_START
from medground.types import Box, Turn

__all__ = [
    "IGNORE_INDEX",
    "batch_prompts",
    "convert_text",
    "encode_prompt",
    "encode_record",
    "load_image",
    "random_crop",
    "random_pad",
    "read_records",
    "record_texts",
    "record_turns",
]

IGNORE_INDEX = -100


def read_records(data_dir: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Every record of ``data_dir/records/*.jsonl`` (sorted shards, file order), optionally of one split."""
    root = Path(data_dir)
    shards = sorted((root / "records").glob("*.jsonl"))
    if not shards:
        raise FileNotFoundError(
            f"no record shards in {root / 'records'} (expected shard-*.jsonl); build them with `medground build SRC --out {root}`"
        )
    records = []
    for shard in shards:
        with shard.open(encoding="utf-8") as handle:
            records.extend(json.loads(line) for line in handle if line.strip())
    if split is not None:
        records = [r for r in records if r.get("split") == split]
    return records


def convert_text(
    text: str,
    source: Dialect,
    target: Dialect,
    width: int,
    height: int,
    exact: list[Box] | None = None,
    crop: Box | None = None,
    pad: tuple[int, int, int, int] | None = None,
) -> str:
    """Rewrite every box of ``text`` from ``source`` into ``target`` dialect for a width x height image.

    ``exact``: canonical boxes the text may denote; a parsed box equal to one of them after the
    source dialect's round trip is replaced by it, so grid rounding does not accumulate.
    ``crop``: a window of the image; boxes are moved into its frame and written for its size.
    ``pad``: (left, top, right, bottom) pixels of black border added after the crop; boxes move by
    (left, top) and are written for the padded size.
    """
    framed = crop is not None or pad is not None
    return reground_text(
        text,
        source,
        target,
        width,
        height,
        exact,
        frame_mover(crop, pad) if framed else None,
        framed_size(width, height, crop, pad) if framed else None,
    )


def random_crop(record: dict[str, Any], rng: random.Random, max_fraction: float) -> Box:
    """A random window of the record's image that keeps every region its turns mention whole.

    Each side moves inwards by up to ``max_fraction`` of the image size, never past a mentioned box.
    """
    width, height = int(record["width"]), int(record["height"])
    regions = record.get("regions", [])
    used = [
        Box.from_list(regions[i]["box"])
        for t in record.get("turns", [])
        for i in t.get("regions", [])
        if i < len(regions) and regions[i].get("box")
    ]
    lo_x = min([b.x0 for b in used], default=width // 2)
    lo_y = min([b.y0 for b in used], default=height // 2)
    hi_x = max([b.x1 for b in used], default=width // 2 + 1)
    hi_y = max([b.y1 for b in used], default=height // 2 + 1)
    x0 = rng.randint(0, max(0, min(lo_x, int(max_fraction * width))))
    y0 = rng.randint(0, max(0, min(lo_y, int(max_fraction * height))))
    x1 = width - rng.randint(0, max(0, min(width - hi_x, int(max_fraction * width))))
    y1 = height - rng.randint(0, max(0, min(height - hi_y, int(max_fraction * height))))
    return Box(x0, y0, max(x1, x0 + 1), max(y1, y0 + 1))


def random_pad(width: int, height: int, rng: random.Random, max_fraction: float) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) border of a width x height image, each side up to ``max_fraction`` of its size.

    Padding the image with it shifts every structure to a random place (see :func:`convert_text`).
    """
    px, py = int(max_fraction * width), int(max_fraction * height)
    return rng.randint(0, px), rng.randint(0, py), rng.randint(0, px), rng.randint(0, py)


def record_turns(
    record: dict[str, Any],
    target: Dialect,
    crop: Box | None = None,
    pad: tuple[int, int, int, int] | None = None,
) -> list[Turn]:
    """The record's human/gpt pairs in ``target`` dialect; the ``<image>`` placeholder is removed.

    ``crop``: a window of the image (see :func:`random_crop`); boxes are then written in its frame.
    ``pad``: a black border added after the crop (see :func:`random_pad`); boxes move with it.
    With either, position phrases ("in the upper left part of the image") are recomputed in the framed
    image; a turn whose new phrase cannot be told (see :func:`~medground.mllm.positions.position_rewrites`) is left out.
    """
    source = get_dialect(record.get("dialect", target.name))
    width, height = int(record["width"]), int(record["height"])
    exact = [Box.from_list(r["box"]) for r in record.get("regions", []) if r.get("box")]
    convs = record["conversations"]
    if len(convs) % 2 or any(c["from"] != ("human" if i % 2 == 0 else "gpt") for i, c in enumerate(convs)):
        raise ValueError(
            f"record {record.get('id')!r}: conversations must alternate human/gpt, got "
            f"{[c['from'] for c in convs]}"
        )
    meta = record.get("turns") or [{}] * (len(convs) // 2)
    turns = []
    for i in range(0, len(convs), 2):
        question = (
            convs[i]["value"].replace(IMAGE_PLACEHOLDER + "\n", "").replace(IMAGE_PLACEHOLDER, "").strip()
        )
        info = meta[i // 2] if i // 2 < len(meta) else {}
        answer = convs[i + 1]["value"]
        rewrites: dict[str, str] | None = {}
        if crop is not None or pad is not None:
            rewrites = position_rewrites(record, info, (question, answer), crop, pad)
            if rewrites is None:
                continue
        turns.append(
            Turn(
                task=str(info.get("task", "")),
                question=convert_text(
                    rewrite_phrases(question, rewrites), source, target, width, height, exact, crop, pad
                ),
                answer=convert_text(
                    rewrite_phrases(answer, rewrites), source, target, width, height, exact, crop, pad
                ),
                regions=[int(r) for r in info.get("regions", [])],
                structure=info.get("structure"),
                negative=bool(info.get("negative", False)),
            )
        )
    return turns


def record_texts(records: list[dict[str, Any]], target: Dialect) -> Iterator[str]:
    """All question and answer texts of ``records`` in ``target`` dialect, plus the chat scaffolding."""
    yield f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n<|im_start|>assistant\n"
    for record in records:
        for turn in record_turns(record, target):
            yield turn.question
            yield turn.answer


def load_image(image: str | Path | np.ndarray | Image.Image) -> Image.Image:
    """An RGB PIL image from a path, a PIL image or an array (H, W) gray / (H, W, 3|4) uint8."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
            raise ValueError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")
        if array.dtype != np.uint8:
            raise ValueError(f"image array must be uint8 (0..255), got {array.dtype}; scale it first")
        return Image.fromarray(array).convert("RGB")
    return Image.fromarray(read_image(image)).convert("RGB")  # clear errors for missing or corrupt files


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_record(
    record: dict[str, Any],
    processor: Any,
    dialect: Dialect,
    data_dir: str | Path,
    max_length: int = 2048,
    crop: Box | None = None,
    pad: tuple[int, int, int, int] | None = None,
) -> dict[str, Any]:
    """Token ids, labels and pixels of one record for training.

    Returns ``input_ids`` / ``labels`` / ``mm_token_type_ids``: (L,) int64 lists, labels ``-100``
    except on assistant answers and their ``<|im_end|>``; ``pixel_values``: (patches, C*T*P*P) float32;
    ``image_grid_thw``: (1, 3). Turns that would pass ``max_length`` are dropped (the first is kept).
    ``crop``: train on this window of the image (augmentation); boxes move into its frame.
    ``pad``: then add this (left, top, right, bottom) black border; boxes move with it.
    Should the framing leave no turn (every position phrase undecidable, see :func:`record_turns`), the
    record is encoded unframed.
    """
    turns = record_turns(record, dialect, crop, pad)
    if not turns and (crop is not None or pad is not None):
        return encode_record(record, processor, dialect, data_dir, max_length)
    image = load_image(Path(data_dir) / record["image"])
    if crop is not None:
        image = image.crop((crop.x0, crop.y0, crop.x1, crop.y1))
    if pad is not None:
        canvas = Image.new("RGB", (image.width + pad[0] + pad[2], image.height + pad[1] + pad[3]))
        canvas.paste(image, (pad[0], pad[1]))
        image = canvas
    vision = processor.image_processor(images=[image], return_tensors="pt")
    grid = vision["image_grid_thw"]
    n_pad = int(grid.prod()) // processor.image_processor.merge_size**2
    tok = processor.tokenizer
    ids = _ids(tok, f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n")
    labels = [IGNORE_INDEX] * len(ids)
    for i, turn in enumerate(turns):
        vis = VISION_START + IMAGE_PAD * n_pad + VISION_END if i == 0 else ""
        prompt = _ids(tok, f"<|im_start|>user\n{vis}{turn.question}<|im_end|>\n<|im_start|>assistant\n")
        answer = _ids(tok, f"{turn.answer}<|im_end|>")
        tail = _ids(tok, "\n")
        if i > 0 and len(ids) + len(prompt) + len(answer) + len(tail) > max_length:
            break
        ids += prompt + answer + tail
        labels += [IGNORE_INDEX] * len(prompt) + answer + [IGNORE_INDEX] * len(tail)
    image_id = tok.convert_tokens_to_ids(IMAGE_PAD)
    return {
        "input_ids": ids,
        "labels": labels,
        "mm_token_type_ids": [int(t == image_id) for t in ids],
        "pixel_values": vision["pixel_values"],
        "image_grid_thw": grid,
    }


def encode_prompt(
    processor: Any, image: Image.Image, question: str, history: Sequence[tuple[str, str]] = ()
) -> dict[str, Any]:
    """Model inputs (batch of one) asking ``question`` about ``image``, ending at the assistant's turn.

    ``history``: earlier (question, answer) turns of the conversation, in the model's dialect; they are
    rendered as in training (:func:`encode_record`), the image in the first user turn.

    ``input_ids`` / ``attention_mask`` / ``mm_token_type_ids``: (1, L) int64; ``pixel_values``:
    (patches, C*T*P*P) float32; ``image_grid_thw``: (1, 3) int64. Same layout as :func:`encode_record`.
    """
    import torch

    vision = processor.image_processor(images=[image], return_tensors="pt")
    n_pad = int(vision["image_grid_thw"].prod()) // processor.image_processor.merge_size**2
    tok = processor.tokenizer
    vision_text = f"{VISION_START}{IMAGE_PAD * n_pad}{VISION_END}"
    text = f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
    for i, (asked, answered) in enumerate([*history, (question, None)]):
        text += f"<|im_start|>user\n{vision_text if i == 0 else ''}{asked}<|im_end|>\n<|im_start|>assistant\n"
        if answered is not None:
            text += f"{answered}<|im_end|>\n"
    ids = torch.tensor([_ids(tok, text)], dtype=torch.long)
    image_id = tok.convert_tokens_to_ids(IMAGE_PAD)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "mm_token_type_ids": (ids == image_id).long(),
        "pixel_values": vision["pixel_values"],
        "image_grid_thw": vision["image_grid_thw"],
    }


def batch_prompts(prompts: Sequence[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """:func:`encode_prompt` outputs as one batch for ``generate``: token rows left-padded to the
    longest (``pad_id``, attention 0), so every row's answer starts at the same column; images
    concatenated in row order.

    ``input_ids`` / ``attention_mask`` / ``mm_token_type_ids``: (B, L_max); ``pixel_values``: (sum of
    patches, C*T*P*P); ``image_grid_thw``: (B, 3).
    """
    import torch
    import torch.nn.functional as F  # noqa: N812

    longest = max(p["input_ids"].shape[1] for p in prompts)

    def rows(key: str, fill: int) -> Any:
        return torch.cat([F.pad(p[key], (longest - p[key].shape[1], 0), value=fill) for p in prompts])

    return {
        "input_ids": rows("input_ids", pad_id),
        "attention_mask": rows("attention_mask", 0),
        "mm_token_type_ids": rows("mm_token_type_ids", 0),
        "pixel_values": torch.cat([p["pixel_values"] for p in prompts]),
        "image_grid_thw": torch.cat([p["image_grid_thw"] for p in prompts]),
    }
