"""InContextSegmenter: the user-facing facade over an in-context model (RidgeSeg or PoolSeg).

It takes arrays or paths in the user's pixel frame (any size, gray or RGB), owns resizing and
normalisation, encodes a support set once (:meth:`encode_support`) and returns probability masks at
each query's original size. Volumes are segmented slice by slice and written back as NIfTI with the
query's affine and header (so spacing is kept).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal, overload

import numpy as np
import torch
from safetensors.torch import load_file

from medground.icl.boxprompt import BoxSeg, check_box, load_boxseg, segment_boxes
from medground.icl.model import PoolSeg, PoolSegConfig, SupportContext, model_folder_files, save_model_folder
from medground.icl.preprocess import check_pair, prepare_image, prepare_mask, resize_back
from medground.icl.solver import RidgeContext, RidgeSeg, RidgeSegConfig
from medground.icl.text import TextEncoder
from medground.icl.universeg import UniverSeg, UniverSegConfig
from medground.io import (
    Volume,
    axis_length,
    canonical_volume,
    display_volume,
    load_label_volume,
    load_volume,
    read_image,
    read_mask,
    slice_volume,
    stack_slices,
    to_original_order,
    write_nifti_like,
)
from medground.vision.predictor import ImageEncoder, default_encoder

__all__ = [
    "BOX_ENGINES",
    "DEFAULT_WEIGHTS",
    "ImageLike",
    "InContextModel",
    "InContextSegmenter",
    "load_pretrained",
    "save_pretrained",
    "support_from_volume",
]

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights"
BOX_ENGINES = ("boxseg", "litemedsam")
"""What segments a box alone: BoxSeg (the default) or the pretrained LiteMedSAM (:mod:`medground.vision`).
BoxSeg stays the default by the ship rule of bench/bench_boxseg_medsam.py (bench/RESULTS.md, "Box -> mask
with LiteMedSAM"): LiteMedSAM as shipped scored below the shipped BoxSeg and the inscribed ellipse."""
ImageLike = np.ndarray | str | Path
InContextModel = RidgeSeg | PoolSeg
"""Both share ``encode_support(images, masks, text) -> context`` and ``segment(queries, context)``."""
Context = RidgeContext | SupportContext
_ARCHITECTURES = {"ridgeseg": (RidgeSeg, RidgeSegConfig), "poolseg": (PoolSeg, PoolSegConfig)}
_BASELINE_ARCHITECTURES = {"universeg": (UniverSeg, UniverSegConfig)}


def save_pretrained(model: InContextModel | UniverSeg, folder: Path, extra: dict | None = None) -> Path:
    """Write ``folder/config.json`` and ``folder/model.safetensors`` (+ ``extra`` as ``meta.json``).

    Also saves a trained UniverSeg (``icl-train --architecture universeg``: baseline (c) of icl-eval and
    the speed benchmark), which :func:`load_pretrained` reads only when asked for baselines."""
    folder = save_model_folder(model, folder)
    if extra is not None:
        (folder / "meta.json").write_text(json.dumps(extra, indent=2, sort_keys=True) + "\n")
    return folder


@overload
def load_pretrained(
    folder: Path, with_baselines: Literal[False] = False, size: int | None = None
) -> InContextModel: ...
@overload
def load_pretrained(
    folder: Path, with_baselines: bool, size: int | None = None
) -> InContextModel | UniverSeg: ...
def load_pretrained(
    folder: Path, with_baselines: bool = False, size: int | None = None
) -> InContextModel | UniverSeg:
    """Rebuild the model of a folder written by :func:`save_pretrained` (eval mode, CPU).

    Only our in-context models by default (what the facade serves); ``with_baselines`` also reads a
    trained UniverSeg, which icl-eval scores as a baseline. ``size`` runs a RidgeSeg at another
    working resolution than the one in its config.json (its weights do not depend on it: convolutions,
    a per-pixel solve, blur scales that follow the size); thin structures (vessels, nuclei) are
    resolved better at 128-256 than at 64, at a cost per query that grows with the size squared.
    ValueError for another architecture or a size the refinement U-Net cannot halve evenly.
    """
    cfg_path, weights = model_folder_files(folder, "model folder", "`medground icl-train`")
    architecture = json.loads(cfg_path.read_text()).get("architecture", "poolseg")
    known = _ARCHITECTURES | (_BASELINE_ARCHITECTURES if with_baselines else {})
    if architecture not in known:
        raise ValueError(
            f"{cfg_path}: architecture {architecture!r} is not an in-context model; known: {sorted(known)}"
        )
    model_cls, config_cls = known[architecture]
    config = config_cls.from_json(cfg_path)
    if size is not None and size != config.size:
        if model_cls is not RidgeSeg:
            raise ValueError(
                f"{cfg_path}: only a RidgeSeg runs at another working size than it was trained at; "
                f"this {architecture} model works at {config.size} only"
            )
        config = replace(config, size=size)
    model = model_cls(config)
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


def _as_image(item: ImageLike) -> np.ndarray:
    return read_image(item) if isinstance(item, str | Path) else np.asarray(item)


def _as_mask(item: ImageLike) -> np.ndarray:
    return read_mask(item) if isinstance(item, str | Path) else np.asarray(item)


class InContextSegmenter:
    """Segment queries from a support set of (image, mask) pairs and/or a text prompt and/or a box.

    A box alone is segmented by ``box_engine``: "boxseg" (default) or "litemedsam" (the pretrained encoder
    and mask decoder of :mod:`medground.vision`, ``image_encoder`` or the process-wide one, each image
    encoded once). A box with supports or text always uses BoxSeg (:mod:`medground.icl.boxprompt`), whose prior
    channel takes the in-context map; it is loaded on first use from ``box_path`` (default: the shipped
    ``medground/icl/weights/box``) unless one is passed as ``box_model``.
    """

    def __init__(
        self,
        model: InContextModel,
        text_encoder: TextEncoder | None = None,
        batch_size: int = 16,
        box_model: BoxSeg | None = None,
        box_path: str | Path | None = None,
        box_engine: str | None = None,
        image_encoder: ImageEncoder | None = None,
    ) -> None:
        box_engine = box_engine or "boxseg"
        if box_engine not in BOX_ENGINES:
            raise ValueError(f"box_engine: expected one of {', '.join(BOX_ENGINES)}, got {box_engine!r}")
        self.model = model.eval()
        self.size = model.config.size
        self.text_encoder = text_encoder or TextEncoder()
        self.batch_size = batch_size
        self._box_model = box_model
        self._box_path = Path(box_path) if box_path is not None else None
        self.box_engine = box_engine
        self._image_encoder = image_encoder

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        box_path: str | Path | None = None,
        size: int | None = None,
        box_engine: str | None = None,
    ) -> InContextSegmenter:
        """Load a model folder; ``None`` loads the weights shipped in ``medground/icl/weights``
        (``box_path``: the box-prompt model folder, default the shipped ``weights/box``; ``size``: the
        working resolution, default the weights' own, see :func:`load_pretrained`; ``box_engine``: what
        segments a box alone, one of :data:`BOX_ENGINES`, default "boxseg")."""
        folder = Path(path) if path is not None else DEFAULT_WEIGHTS
        return cls(load_pretrained(folder, size=size), box_path=box_path, box_engine=box_engine)

    @property
    def box_model(self) -> BoxSeg:
        """The box-prompt model, loaded on first use."""
        if self._box_model is None:
            self._box_model = load_boxseg(self._box_path)
        return self._box_model

    @property
    def image_encoder(self) -> ImageEncoder:
        """The LiteMedSAM encoder and decoder for a box alone (the process-wide one unless given)."""
        if self._image_encoder is None:
            self._image_encoder = default_encoder()
        return self._image_encoder

    @torch.no_grad()
    def encode_support(
        self, support: Sequence[tuple[ImageLike, ImageLike]] | None = None, text: str | None = None
    ) -> Context:
        """Encode k >= 0 (image, mask) pairs (arrays or paths; mask foreground = value > 0) and/or a text.

        With supports, RidgeSeg keeps the text only where it does not lower the leave-one-out Dice of
        the supports themselves, and never with one support (``RidgeSeg._text_rule``; the returned
        context's ``text_used`` says): the name is used only where the supports' own evidence says it
        does not hurt. Raises ValueError for an image/mask size mismatch, an empty mask, or k = 0 without text.
        """
        pairs = list(support or [])
        if not pairs and not text:
            raise ValueError(
                "nothing to segment from: give at least one (image, mask) support pair or a text prompt"
            )
        images, masks = [], []
        for i, (img, msk) in enumerate(pairs):
            img_arr, msk_arr = _as_image(img), _as_mask(msk)
            check_pair(img_arr, msk_arr, i)
            images.append(prepare_image(img_arr, self.size, f"support image {i}"))
            masks.append(prepare_mask(msk_arr, self.size, f"support mask {i}"))
        s = self.size
        img_t = torch.stack(images)[None] if images else torch.zeros(1, 0, 3, s, s)
        msk_t = torch.stack(masks)[None] if masks else torch.zeros(1, 0, 1, s, s)
        text_t = self.text_encoder.encode([text])[0:1] if text else None
        return self.model.encode_support(img_t, msk_t, text_t)

    @torch.no_grad()
    def segment(
        self,
        query: ImageLike | Sequence[ImageLike],
        support: Sequence[tuple[ImageLike, ImageLike]] | None = None,
        text: str | None = None,
        context: Context | None = None,
        box: Sequence[float] | Sequence[Sequence[float]] | None = None,
    ) -> np.ndarray | list[np.ndarray]:
        """Probability masks (H, W) float32 in [0, 1] at each query's own size.

        query: one image (array or path) -> one array; a list -> a list. Pass ``support``/``text``, or a
        ``context`` from :meth:`encode_support` (encode once, segment many), and/or a ``box``:
        ``[x0, y0, x1, y1]`` in pixels of the query (x1/y1 exclusive) for one query, a list of such
        boxes (one per query) for a list. With a box alone ``box_engine`` segments the object in it
        (LiteMedSAM's mask may reach outside the box); with a box and supports/text the
        in-context map is BoxSeg's prior channel, and BoxSeg's probability is 0 outside the box's crop
        window (the box plus 20% and 4 px per side). Raises ValueError naming a box that is malformed or
        not inside its image.
        """
        single = isinstance(query, str | Path | np.ndarray)
        queries = [query] if single else list(query)
        arrays = [_as_image(q) for q in queries]
        if box is None:
            ctx = context if context is not None else self.encode_support(support, text)
            out = self._segment_in_context(arrays, ctx)
            return out[0] if single else out
        boxes = _boxes_per_query(box, single, len(arrays))
        checked = [
            check_box(b, a.shape[0], a.shape[1], f"box of query {i}")
            for i, (b, a) in enumerate(zip(boxes, arrays, strict=True))
        ]
        prompted = context is not None or bool(support) or bool(text)
        if not prompted and self.box_engine == "litemedsam":
            out = [self.image_encoder.segment_box(a, b) for a, b in zip(arrays, checked, strict=True)]
            return out[0] if single else out
        priors: list[np.ndarray | None] = [None] * len(arrays)
        if prompted:
            ctx = context if context is not None else self.encode_support(support, text)
            priors = list(self._segment_in_context(arrays, ctx))
        out = [
            segment_boxes(self.box_model, a, [b], [p])[0]
            for a, b, p in zip(arrays, checked, priors, strict=True)
        ]
        return out[0] if single else out

    def _segment_in_context(self, arrays: list[np.ndarray], ctx: Context) -> list[np.ndarray]:
        """In-context probability maps (H, W) for query arrays, in batches."""
        out: list[np.ndarray] = []
        for start in range(0, len(arrays), self.batch_size):
            chunk = arrays[start : start + self.batch_size]
            batch = torch.stack([prepare_image(a, self.size, "query") for a in chunk])[None]
            logits = self.model.segment(batch, ctx)[
                0, :, 0
            ]  # (Q, S, S) logits; resize_back applies the sigmoid
            out.extend(resize_back(lg, a.shape[0], a.shape[1]) for lg, a in zip(logits, chunk, strict=True))
        return out

    def segment_volume(
        self,
        volume: str | Path | np.ndarray | Volume,
        support: Sequence[tuple[ImageLike, ImageLike]] | None = None,
        text: str | None = None,
        out: str | Path | None = None,
        threshold: float = 0.5,
        context: Context | None = None,
        plane: str = "axial",
        modality: str = "mr",
    ) -> np.ndarray:
        """Segment a volume slice by slice -> uint8 0/1 mask in the volume's own voxel order.

        ``volume``: a NIfTI path, a :class:`~medground.io.Volume`, or an (X, Y, Z) array taken as RAS+
        with an identity affine. It is reoriented to RAS+, made display-ready like the data engine's
        slices (``modality`` "ct": soft-tissue window, else 0.5-99.5 percentiles of non-zero voxels)
        and cut along ``plane`` in radiological display orientation, so 2D supports from
        ``medground build`` or :func:`support_from_volume` match the query slices. With ``out`` the
        mask is written as NIfTI with the query's affine and header (spacing kept).
        """
        if isinstance(volume, Volume):
            vol = volume
        elif isinstance(volume, str | Path):
            vol = load_volume(volume)
        else:
            vol = canonical_volume(np.asarray(volume, dtype=np.float32), np.eye(4))
        display = display_volume(vol.array, modality)
        ctx = context if context is not None else self.encode_support(support, text)
        slices = [slice_volume(display, plane, i) for i in range(axis_length(display.shape, plane))]
        probs = self.segment(slices, context=ctx)
        mask = stack_slices([(p >= threshold).astype(np.uint8) for p in probs], plane)
        if out is not None:
            write_nifti_like(out, mask, vol)
        return to_original_order(mask, vol)


def _boxes_per_query(box, single: bool, count: int) -> list:
    """``box`` -> one box per query: one query takes [x0, y0, x1, y1], a list of queries a list of boxes."""
    if single:
        return [box]
    boxes = list(box)
    if len(boxes) != count or any(np.ndim(b) != 1 for b in boxes):
        raise ValueError(
            f"box: a list of {count} queries needs a list of {count} boxes [x0, y0, x1, y1], got {box!r}"
        )
    return boxes


def support_from_volume(
    volume: str | Path,
    labels: str | Path,
    max_slices: int = 8,
    label: int | None = None,
    plane: str = "axial",
    modality: str = "mr",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image slice, 0/1 mask slice) pairs from a support volume and its label volume.

    Up to ``max_slices`` evenly spaced ``plane`` slices whose mask (label > 0, or == ``label``) is
    non-empty, in the same display orientation and intensity scaling as :meth:`InContextSegmenter.segment_volume`.
    Raises ValueError (ReadError) for unreadable or mismatched volumes and a label volume without foreground.
    """
    vol = load_volume(volume)
    lab = load_label_volume(labels, like=vol)
    fg = lab.array > 0 if label is None else lab.array == label
    picked = [i for i in range(axis_length(fg.shape, plane)) if slice_volume(fg, plane, i).any()]
    if not picked:
        raise ValueError(
            f"label volume {labels} has no foreground voxels{'' if label is None else f' with label {label}'}"
        )
    chosen = [
        picked[i]
        for i in np.unique(np.linspace(0, len(picked) - 1, min(max_slices, len(picked))).round().astype(int))
    ]
    display = display_volume(vol.array, modality)
    return [(slice_volume(display, plane, i), slice_volume(fg, plane, i).astype(np.uint8)) for i in chosen]
