"""Each trainer's data path, re-implemented from its source, to load an export as the trainer would and
decode every box in the frame the trainer feeds the model. Independent of medground's dialect code.

Sources (read at these commits; the trainers are not installed here, they would replace torch):
- LLaMA-Factory (hiyouga/LLaMA-Factory): ``hparams/model_args.py`` image_max_pixels = 768 * 768,
  image_min_pixels = 32 * 32; ``data/mm_plugin.py`` ``BasePlugin._preprocess_image`` (w * h > max:
  resize by sqrt(max / (w * h)) with int(); w * h < min: grow likewise), then the Qwen2-VL processor's
  ``smart_resize`` (min 56 * 56, max 12845056); ``data/converter.py`` (media joined to dataset_dir).
- ms-swift 3602360a (modelscope/ms-swift): ``template/templates/qwen.py`` ``replace_tag`` feeds
  ``qwen_vl_utils.fetch_image`` (``smart_resize`` within MAX_PIXELS / MIN_PIXELS, defaults 12845056 /
  3136); ``template/base.py`` ``Template.normalize_bbox``: a ``real`` box becomes
  round(x / width * norm) with norm the fed image's size (``norm_bbox = 'none'``, Qwen2.5-VL) or 1000.
- LLaVA (haotian-liu/LLaVA) ``train/train.py`` with ``image_aspect_ratio pad``: ``expand2square`` pads
  to max(w, h) centred ((S - w) // 2), then the CLIP processor resizes to 336 x 336.
- InternVL 2410d1db (OpenGVLab/InternVL) ``internvl_chat/internvl/train/internvl_chat_finetune.py``
  (meta keys, "annotation must be jsonl", ``os.path.join(root, image)``, ``<image>`` added to the first
  turn when missing) and ``dataset.py`` ``dynamic_preprocess`` (the image resized to a 448-tile grid).
- Qwen2-VL ``smart_resize``: ``transformers.models.qwen2_vl.image_processing_pil_qwen2_vl``.

Box text is decoded from each dialect's published definition (``medground.grounding.scales``' docstring:
qwen-vl-grid [0, 1000) bins, a bin read as its first pixel and the end bin naming the last pixel;
qwen2-vl/qwen3-vl/internvl edges on a [0, 1000] scale; qwen2.5-vl pixels of the fed image).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

__all__ = ["LF_DEFAULT", "SWIFT_DEFAULT", "Fed", "box_iou", "fed_mask_box", "load_export"]

LF_DEFAULT = (768 * 768, 32 * 32)  # LLaMA-Factory image_max_pixels, image_min_pixels
SWIFT_DEFAULT = (16384 * 28 * 28, 4 * 28 * 28)  # qwen_vl_utils MAX_PIXELS, MIN_PIXELS
_N = r"(-?\d+(?:\.\d+)?)"
_FOUR = rf"{_N},\s*{_N},\s*{_N},\s*{_N}"
# dialect -> (regex of one box, how its numbers map to the fed frame: "bins", "edges" or "pixels")
DIALECT_TEXT = {
    "qwen-vl-grid": (rf"<box>\({_N},{_N}\),\({_N},{_N}\)</box>", "bins"),
    "qwen2-vl-norm1000": (rf"<\|box_start\|>\({_N},{_N}\),\({_N},{_N}\)<\|box_end\|>", "edges"),
    "qwen2.5-vl-pixels": (rf'"bbox_2d": \[{_FOUR}\]', "pixels"),
    "qwen3-vl-norm1000": (rf'"bbox_2d": \[{_FOUR}\]', "edges"),
    "internvl-norm1000": (rf"\[{_FOUR}\]", "edges"),
}


@dataclass
class Fed:
    """One row as a trainer feeds it: the row's id, the fed image size and every box in that frame,
    plus the build image the row points back to (for the mask comparison)."""

    row_id: str
    size: tuple[int, int]
    boxes: list[list[float]] = field(default_factory=list)


def _decode(text: str, dialect: str, image: tuple[int, int], fed: tuple[int, int]) -> list[list[float]]:
    """Every box of ``dialect`` in ``text`` as edges in the ``fed`` frame: grid numbers are read in the
    ``image`` frame by the dialect's definition (edges: n * side / 1000; bins: the first pixel of the bin,
    ceil(n * side / 1000), the end bin naming the last pixel) and scaled to ``fed``; pixel numbers are
    already fed pixels."""
    pattern, kind = DIALECT_TEXT[dialect]
    if dialect == "internvl-norm1000":
        text = " ".join(re.findall(r"<box>(.*?)</box>", text))
    (w, h), (fw, fh) = image, fed
    out = []
    for m in re.finditer(pattern, text):
        x0, y0, x1, y1 = (float(v) for v in m.groups())
        if kind == "pixels":
            out.append([x0, y0, x1, y1])
            continue
        if kind == "edges":
            box = [x0 * w / 1000, y0 * h / 1000, x1 * w / 1000, y1 * h / 1000]
        else:
            first = [math.ceil(v * side / 1000) for v, side in ((x0, w), (y0, h), (x1, w), (y1, h))]
            box = [first[0], first[1], first[2] + 1, first[3] + 1]
        out.append([box[0] * fw / w, box[1] * fh / h, box[2] * fw / w, box[3] * fh / h])
    return out


def _lf_size(w: int, h: int, max_pixels: int, min_pixels: int) -> tuple[int, int]:
    if w * h > max_pixels:
        f = math.sqrt(max_pixels / (w * h))
        w, h = int(w * f), int(h * f)
    if w * h < min_pixels:
        f = math.sqrt(min_pixels / (w * h))
        w, h = int(w * f), int(h * f)
    rh, rw = smart_resize(h, w, factor=28, min_pixels=56 * 56, max_pixels=12845056)
    return rw, rh


def _qwen_size(w: int, h: int, max_pixels: int, min_pixels: int) -> tuple[int, int]:
    rh, rw = smart_resize(h, w, factor=28, min_pixels=min_pixels, max_pixels=max_pixels)
    return rw, rh


def _image_size(path: str) -> tuple[int, int]:
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    with Image.open(path) as image:
        image.convert("RGB")  # every trainer decodes it
        return image.size


def _chat_rows(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        roles = [m["role"] for m in row["messages"] if m["role"] != "system"]
        if roles != ["user", "assistant"] * (len(roles) // 2) or len(roles) % 2:
            raise ValueError(f"{row.get('id')}: roles {roles} do not alternate")
        if sum(m["content"].count("<image>") for m in row["messages"]) != len(row["images"]):
            raise ValueError(f"{row.get('id')}: <image> count differs from the images")
    return rows


def _llamafactory(folder: Path, name: str, dialect: str, setting: tuple[int, int]) -> list[Fed]:
    entry = json.loads((folder / "dataset_info.json").read_text())[name]
    out = []
    for row in _chat_rows(folder / entry["file_name"]):
        w, h = _image_size(os.path.join(folder, row["images"][0]))
        size = _lf_size(w, h, *setting)
        text = " ".join(m["content"] for m in row["messages"])
        out.append(Fed(row["id"], size, _decode(text, dialect, (w, h), size)))
    return out


def _swift(path: Path, dialect: str, setting: tuple[int, int]) -> list[Fed]:
    out = []
    for row in _chat_rows(path):
        w, h = _image_size(os.path.join(path.parent, row["images"][0]))  # ROOT_IMAGE_DIR
        size = _qwen_size(w, h, *setting)
        text = " ".join(m["content"] for m in row["messages"])
        if "objects" not in row:
            out.append(Fed(row["id"], size, _decode(text, dialect, (w, h), size)))
            continue
        objects = row["objects"]
        if text.count("<bbox>") != len(objects["bbox"]) or text.count("<ref-object>") != len(objects["ref"]):
            raise ValueError(f"{row['id']}: placeholders and objects differ in number")
        norm = size if dialect == "qwen2.5-vl-pixels" else (1000, 1000)  # Template.normalize_bbox
        boxes = []
        for x0, y0, x1, y1 in objects["bbox"]:
            numbers = [
                round(x0 / w * norm[0]),
                round(y0 / h * norm[1]),
                round(x1 / w * norm[0]),
                round(y1 / h * norm[1]),
            ]
            boxes.append(
                [
                    numbers[0] * size[0] / norm[0],
                    numbers[1] * size[1] / norm[1],
                    numbers[2] * size[0] / norm[0],
                    numbers[3] * size[1] / norm[1],
                ]
            )
        out.append(Fed(row["id"], size, boxes))
    return out


def _llava(path: Path, dialect: str, setting: tuple[int, int]) -> list[Fed]:
    """LLaVA's own training (pad to a square, 336 x 336) for relative dialects; for pixel numbers the
    reader of LLaVA-style JSON is Qwen's (qwen-vl-finetune: the image through the processor's
    ``smart_resize`` within ``setting``)."""
    out = []
    for row in json.loads(path.read_text()):
        turns = row["conversations"]
        if [t["from"] for t in turns] != ["human", "gpt"] * (len(turns) // 2):
            raise ValueError(f"{row['id']}: LLaVA wants human/gpt turns")
        w, h = _image_size(os.path.join(path.parent, row["image"]))
        if DIALECT_TEXT[dialect][1] == "pixels":
            size = _qwen_size(w, h, *setting)
            out.append(
                Fed(row["id"], size, _decode(" ".join(t["value"] for t in turns), dialect, (w, h), size))
            )
            continue
        side = max(w, h)
        px, py = (side - w) // 2, (side - h) // 2  # expand2square
        text = " ".join(t["value"] for t in turns)
        boxes = [
            [
                (b[0] + px) * 336 / side,
                (b[1] + py) * 336 / side,
                (b[2] + px) * 336 / side,
                (b[3] + py) * 336 / side,
            ]
            for b in _decode(text, dialect, (w, h), (w, h))
        ]
        out.append(Fed(row["id"], (336, 336), boxes))
    return out


def _internvl_grid(w: int, h: int, max_num: int = 6, tile: int = 448) -> tuple[int, int]:
    """``dynamic_preprocess``'s resized size (find_closest_aspect_ratio)."""
    ratios = sorted(
        {
            (i, j)
            for n in range(1, max_num + 1)
            for i in range(1, n + 1)
            for j in range(1, n + 1)
            if i * j <= max_num
        },
        key=lambda r: r[0] * r[1],
    )
    best, best_diff = (1, 1), float("inf")
    for r in ratios:
        diff = abs(w / h - r[0] / r[1])
        if diff < best_diff:
            best, best_diff = r, diff
        elif diff == best_diff and w * h > 0.5 * tile * tile * r[0] * r[1]:
            best = r
    return tile * best[0], tile * best[1]


def _internvl(meta_path: Path, dialect: str) -> list[Fed]:
    out = []
    for meta in json.loads(meta_path.read_text()).values():
        assert {"root", "annotation", "data_augment", "repeat_time"} <= set(meta), meta
        assert meta["annotation"].endswith("jsonl"), f"annotation must be jsonl, but got {meta['annotation']}"
        with open(meta["annotation"]) as f:  # opened as given, from the working directory
            lines = f.readlines()
        for line in lines:
            item = json.loads(line)
            turns = item["conversations"]
            if "<image>" not in turns[0]["value"]:
                turns[0]["value"] = "<image>\n" + turns[0]["value"]
            if sum(t["value"].count("<image>") for t in turns if t["from"] == "human") != 1:
                raise ValueError(f"{item['id']}: one <image> expected in the human turns")
            if any(t["from"] not in ("human", "gpt") for t in turns):
                raise NotImplementedError(turns)
            w, h = _image_size(os.path.join(meta["root"], item["image"]))
            if (item["width"], item["height"]) != (w, h):
                raise ValueError(
                    f"{item['id']}: width/height {item['width']}x{item['height']} != image {w}x{h}"
                )
            size = _internvl_grid(w, h)
            text = " ".join(t["value"] for t in turns)
            out.append(Fed(item["id"], size, _decode(text, dialect, (w, h), size)))
    return out


def _carried(sample: dict, image: Image.Image, dialect: str, setting: tuple[int, int]) -> Fed:
    w, h = image.size
    if (w, h) != (sample["width"], sample["height"]):
        raise ValueError(
            f"{sample['id']}: carried image {w}x{h} != sample {sample['width']}x{sample['height']}"
        )
    size = _qwen_size(w, h, *setting)
    text = " ".join(t["value"] for t in sample["conversations"])
    return Fed(sample["id"], size, _decode(text, dialect, (w, h), size))


def _parquet(folder: Path, dialect: str, setting: tuple[int, int], cache: Path) -> list[Fed]:
    from datasets import load_dataset

    files = sorted(str(p) for p in folder.glob("shard-*.parquet"))
    ds = load_dataset("parquet", data_files=files, split="train", cache_dir=str(cache))
    return [_carried(row, row["image"], dialect, setting) for row in ds]


def _webdataset(folder: Path, dialect: str, setting: tuple[int, int]) -> list[Fed]:
    import webdataset as wds

    urls = sorted(str(p) for p in folder.glob("shard-*.tar"))
    out = []
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil"):
        meta = sample["json"]
        image = sample[meta["image"].rsplit(".", 1)[1]]
        out.append(_carried(meta, image, dialect, setting))
    return out


def load_export(written: Path, fmt: str, dialect: str, setting: tuple[int, int], cache: Path) -> list[Fed]:
    """Load an export (the path ``medground.data.export.export`` returned) the way format ``fmt``'s
    trainer does, at pixel ``setting`` (max, min) where the trainer has one; one :class:`Fed` per row."""
    if fmt in ("llamafactory", "sharegpt"):
        return _llamafactory(written.parent, written.name.rsplit(".", 1)[0], dialect, setting)
    if fmt in ("swift", "swift-objects"):
        return _swift(written, dialect, setting)
    if fmt == "llava":
        return _llava(written, dialect, setting)
    if fmt == "internvl":
        return _internvl(written.with_name(written.name.removesuffix(".jsonl") + "_meta.json"), dialect)
    if fmt == "parquet":
        return _parquet(written, dialect, setting, cache)
    return _webdataset(written, dialect, setting)


def fed_mask_box(mask: np.ndarray, fed: tuple[int, int], square: bool = False) -> list[int] | None:
    """The box [x0, y0, x1, y1) of ``mask`` (H, W bool, build frame) in the fed frame (width, height):
    the mask resized by nearest neighbour (``square``: padded to a centred square first, as LLaVA)."""
    if square:
        h, w = mask.shape
        side = max(w, h)
        padded = np.zeros((side, side), bool)
        padded[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = mask
        mask = padded
    resized = (
        np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(fed, Image.Resampling.NEAREST)) > 0
    )
    ys, xs = np.nonzero(resized)
    if not len(xs):
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def box_iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
