"""``Grounder``: ask a trained model about an image; answers come back with boxes in original pixels.

The facade owns everything between a user's image and the model: gray/RGB conversion, the smart
resize to the model's patch grid (inside the processor), putting a user's box into the prompt in the
model's dialect, decoding with special tokens kept (box tokens are special) and parsing boxes back.
Boxes in and out are canonical: absolute pixels of the image as given, ``[x0, y0, x1, y1)``.
With ``segment=True`` each answer box is handed to the box-prompted in-context segmenter (refer ->
ground -> segment in one call) and comes back with its mask in the same pixels.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from medground.grounding import Dialect, Grounded
from medground.io import encode_rle
from medground.mllm.data import batch_prompts, encode_prompt, load_image, read_records, record_turns
from medground.mllm.families import Family, family_for_model_type
from medground.mllm.processor import load_processor
from medground.mllm.train import META_FILE
from medground.types import Box

if TYPE_CHECKING:
    from medground.icl.segmenter import InContextSegmenter

__all__ = [
    "DEFAULT_MODEL",
    "MASK_THRESHOLD",
    "Answer",
    "EncodedQuestion",
    "Grounder",
    "SegmentedBox",
    "predict",
    "mask_boxes",
]

DEFAULT_MODEL = Path(__file__).resolve().parent / "weights" / "bird-nano"
"""The shipped model, loaded when no model is named."""
_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


def answer_text(raw: str) -> str:
    """A decoded answer (special tokens kept) as the answer's text: cut at the first stop token, stripped."""
    for stop in _STOP_TOKENS:
        raw = raw.split(stop)[0]
    return raw.strip()


class TextDeltas:
    """Hands ``emit`` an answer's text as it grows, in pieces whose concatenation is :func:`answer_text`
    of the whole: ``add(raw)`` takes the whole raw text decoded so far; nothing after a stop token, no
    leading or trailing whitespace and no half-decoded character (U+FFFD at the end) is sent early."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit, self.sent = emit, 0

    def add(self, raw: str) -> None:
        stopped = any(stop in raw for stop in _STOP_TOKENS)
        text = answer_text(raw if stopped else raw.rstrip("\ufffd"))
        if len(text) > self.sent:
            self.emit(text[self.sent :])
            self.sent = len(text)


class _Streamer:
    """A ``generate`` streamer (transformers' ``BaseStreamer`` protocol): decodes all new tokens after
    each step, special tokens kept, and passes the text to :class:`TextDeltas`. The first ``put`` is the
    prompt and is skipped."""

    def __init__(self, tokenizer: Any, emit: Callable[[str], None]) -> None:
        self.tokenizer, self.deltas = tokenizer, TextDeltas(emit)
        self.ids: list[int] | None = None

    def put(self, value: torch.Tensor) -> None:
        if self.ids is None:
            self.ids = []
            return
        self.ids += value.reshape(-1).tolist()
        self.deltas.add(self.tokenizer.decode(self.ids, skip_special_tokens=False))

    def end(self) -> None:
        return None


MASK_THRESHOLD = 0.5
"""A pixel belongs to a box's mask when the segmenter's probability is at least this."""


@dataclass(frozen=True)
class SegmentedBox(Grounded):
    """A grounded box with its mask: (H, W) bool in original-image pixels, all of it inside ``box``."""

    mask: np.ndarray = field(compare=False, repr=False)


def mask_boxes(
    segmenter: InContextSegmenter, image: Image.Image | np.ndarray, boxes: Sequence[Grounded]
) -> list[SegmentedBox]:
    """Each box with its mask: ``segmenter``'s box-prompted probability >= :data:`MASK_THRESHOLD`, kept
    inside the box (the answer's region). ``image``: the asked image (PIL or (H, W[, 3]) uint8); boxes
    and masks in its pixels, masks (H, W) bool. Used by ``Grounder.ask(segment=True)`` and the server."""
    pixels = np.asarray(image)
    out = []
    for g in boxes:
        prob = np.asarray(segmenter.segment(pixels, box=g.box.as_list()))
        b = g.box
        mask = np.zeros(pixels.shape[:2], dtype=bool)
        mask[b.y0 : b.y1, b.x0 : b.x1] = prob[b.y0 : b.y1, b.x0 : b.x1] >= MASK_THRESHOLD
        out.append(SegmentedBox(g.label, g.box, mask))
    return out


@dataclass(frozen=True)
class Answer:
    """A model's answer: its text (in the model's dialect) and every box in it, in original-image pixels.

    Boxes are :class:`SegmentedBox` (with a mask) when the question was asked with ``segment=True``.
    """

    text: str
    boxes: list[Grounded]

    def as_dict(self) -> dict[str, Any]:
        """``{"answer": text, "boxes": [{"label": ..., "box": [x0, y0, x1, y1]}]}``; a box with a mask
        also has ``"mask"``: its COCO RLE (:func:`medground.io.encode_rle`, original-image pixels)."""
        boxes = []
        for g in self.boxes:
            row: dict[str, Any] = {"label": g.label, "box": g.box.as_list()}
            if isinstance(g, SegmentedBox):
                row["mask"] = encode_rle(g.mask)
            boxes.append(row)
        return {"answer": self.text, "boxes": boxes}


def _check_dir(path: Path) -> None:
    if not path.is_dir():
        raise FileNotFoundError(
            f"no model directory at {path}; train one with `medground train` or omit --model "
            f"to use the shipped bird-nano ({DEFAULT_MODEL})"
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} has no config.json: not a saved model (save with model.save_pretrained)"
        )
    if not any((path / n).is_file() for n in ("model.safetensors", "model.safetensors.index.json")):
        pickled = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        extra = (
            f" (found {pickled}: pickled weights are refused; convert them to safetensors)" if pickled else ""
        )
        raise FileNotFoundError(f"{path} has no model.safetensors{extra}")


def _load_model(family: Family, source: str) -> Any:
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    fix = (
        "the weights were saved from a different model: retrain, or put the matching config.json beside them"
    )
    try:
        model, info = family.model_cls().from_pretrained(
            source, dtype=dtype, use_safetensors=True, output_loading_info=True
        )
    except RuntimeError as error:  # transformers refuses tensors of the wrong shape
        raise ValueError(
            f"checkpoint {source} does not match its config ({family.name}): {error}; {fix}"
        ) from error
    bad = {k: sorted(v)[:5] for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
    if bad:
        raise ValueError(f"checkpoint {source} does not match its config ({family.name}): {bad}; {fix}")
    return model.eval()


@dataclass(frozen=True)
class EncodedQuestion:
    """One question ready for the model: the asked picture (RGB, original pixels) and its
    :func:`~medground.mllm.data.encode_prompt` inputs (a batch of one)."""

    picture: Image.Image
    inputs: dict[str, torch.Tensor] = field(repr=False)


class Grounder:
    """A refer-and-ground model with its processor and dialect (build with :meth:`from_pretrained`).

    ``segmenter``: the :class:`~medground.icl.segmenter.InContextSegmenter` whose box prompt
    ``ask(..., segment=True)`` uses; None = the shipped one, loaded on the first such question, once.
    ``dialect``: the box dialect the model was trained in (its folder's medground.json), default the
    family's :attr:`~medground.mllm.families.Family.box_dialect`.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        family: Family,
        max_new_tokens: int = 128,
        segmenter: InContextSegmenter | None = None,
        dialect: str | None = None,
    ) -> None:
        self.model, self.processor, self.family = model, processor, family
        size = processor.image_processor.size
        self.dialect: Dialect = family.dialect(size["shortest_edge"], size["longest_edge"], dialect)
        self.max_new_tokens = max_new_tokens
        self.segmenter = segmenter
        self._cached: tuple[str, Image.Image] | None = None
        """(path, image) of the last image read from a file: one attribute, so a reader in another
        thread sees a path with its own image (two attributes could be read half-updated)."""

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        max_new_tokens: int = 128,
        segmenter: InContextSegmenter | None = None,
    ) -> Grounder:
        """Load a saved model directory (default: the shipped bird-nano) or a hub id (``org/name``).

        Only safetensors weights load; a missing directory, missing weights or weights that do not fit
        the config raise an error that says what was found and what to do. ``segmenter``: see the class.
        """
        source = Path(path).expanduser() if path is not None else DEFAULT_MODEL
        hub_id = (
            path is not None
            and not source.exists()
            and re.fullmatch(r"[\w.-]+/[\w.-]+", str(path)) is not None
        )
        if not hub_id:
            _check_dir(source)
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(str(source))
        except OSError as error:
            raise FileNotFoundError(
                f"no model directory at {source} and no hub model {path!r} reachable "
                f"({error}); give a local folder or download the weights first"
            ) from error
        family = family_for_model_type(config.model_type)
        meta_path = source / META_FILE
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        if meta and meta.get("family") != family.name:
            raise ValueError(
                f"{meta_path} says family {meta.get('family')!r} but config.json is {family.name!r}"
            )
        model, processor = _load_model(family, str(source)), load_processor(source)
        return cls(model, processor, family, max_new_tokens, segmenter, meta.get("dialect"))

    def box_segmenter(self) -> InContextSegmenter:
        """The segmenter of ``segment=True``; the shipped one is loaded now if none was given."""
        from medground.icl.segmenter import InContextSegmenter

        if self.segmenter is None:
            self.segmenter = InContextSegmenter.from_pretrained()
        return self.segmenter

    def _load(self, image: str | Path | np.ndarray | Image.Image) -> Image.Image:
        key = str(image) if isinstance(image, str | Path) else None
        cached = self._cached
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        picture = load_image(image)
        if key is not None:
            self._cached = (key, picture)
        return picture

    def prompt(
        self, question: str, box: Box | list[int] | tuple[int, ...] | None, width: int, height: int
    ) -> str:
        """``question`` with ``box`` (original pixels) written in the model's dialect at ``{box}`` or appended."""
        if box is None:
            return question
        box = box if isinstance(box, Box) else Box.from_list(list(box))
        if not box.fits(width, height):
            raise ValueError(
                f"box {box.as_list()} lies outside the {width}x{height} image; give original-image pixels"
            )
        text = self.dialect.box(box, width, height)
        return question.replace("{box}", text) if "{box}" in question else f"{question} {text}"

    def encode(
        self,
        image: str | Path | np.ndarray | Image.Image,
        question: str,
        box: Box | list[int] | tuple[int, ...] | None = None,
        history: Sequence[tuple[str, str]] = (),
    ) -> EncodedQuestion:
        """The model's inputs for one question (see :meth:`ask` for the arguments); raises ``ValueError``
        for a box outside the image. The CPU work before the model (decode, resize, tokenize)."""
        picture = self._load(image)
        width, height = picture.size
        return EncodedQuestion(
            picture,
            encode_prompt(self.processor, picture, self.prompt(question, box, width, height), history),
        )

    @torch.no_grad()
    def answer(
        self,
        questions: Sequence[EncodedQuestion],
        segment: bool = False,
        on_text: Callable[[str], None] | None = None,
        stopping_criteria: Any = None,
    ) -> list[Answer]:
        """Greedy answers to ``questions`` (from :meth:`encode`), all in one ``generate`` call.

        The rows are left-padded (:func:`~medground.mllm.data.batch_prompts`), so each answer is the
        one its question gets alone (up to float rounding); a batch costs little more per step than one
        row, which is what serving concurrent clients and scoring many questions gain. ``on_text``
        streams the answer of a single question (see :meth:`ask`). ``stopping_criteria``: passed to
        ``generate`` (transformers' ``StoppingCriteriaList``; the server stops a left client's row).
        """
        if on_text is not None and len(questions) != 1:
            raise ValueError(f"on_text streams one answer; got {len(questions)} questions")
        tok = self.processor.tokenizer
        inputs = batch_prompts([q.inputs for q in questions], tok.pad_token_id)
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        out = self.model.generate(
            **inputs,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            use_cache=True,  # whatever the saved config says (models trained before 2026-12-01 say False)
            eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tok.pad_token_id,
            streamer=None if on_text is None else _Streamer(tok, on_text),
            stopping_criteria=stopping_criteria,
        )
        start = inputs["input_ids"].shape[1]
        answers = []
        for row, question in zip(out, questions, strict=True):
            text = answer_text(tok.decode(row[start:].tolist(), skip_special_tokens=False))
            width, height = question.picture.size
            boxes = self.dialect.parse(text, width, height)
            if segment:
                boxes = [*mask_boxes(self.box_segmenter(), question.picture, boxes)]
            answers.append(Answer(text, boxes))
        return answers

    def ask(
        self,
        image: str | Path | np.ndarray | Image.Image,
        question: str,
        box: Box | list[int] | tuple[int, ...] | None = None,
        history: Sequence[tuple[str, str]] = (),
        segment: bool = False,
        on_text: Callable[[str], None] | None = None,
    ) -> Answer:
        """Answer ``question`` about ``image`` (path, PIL, (H, W) or (H, W, 3) uint8), greedy decoding.

        ``box``: an optional region [x0, y0, x1, y1) in original-image pixels. Returned boxes are in
        the same frame. ``history``: earlier (question, answer) turns about the same image, in the
        model's dialect (boxes already written with :meth:`prompt`). ``segment``: return each box as a
        :class:`SegmentedBox` with its mask (:func:`mask_boxes`). ``on_text``: called (in this
        thread) with each new piece of the answer's text as it is decoded, token by token; the pieces
        join to the returned ``text``. Several questions at once: :meth:`encode` + :meth:`answer`.
        """
        return self.answer([self.encode(image, question, box, history)], segment, on_text)[0]


def _row(grounder: Grounder, record: dict[str, Any], i: int, turn: Any, answer: Answer) -> dict[str, Any]:
    return {
        "id": f"{record['id']}/{i}",
        "record": record["id"],
        "turn": i,
        "image": record["image"],
        "modality": record.get("modality"),
        "task": turn.task,
        "question": turn.question,
        "annotation": turn.answer,
        "response": answer.text,
        "width": record["width"],
        "height": record["height"],
        "negative": turn.negative,
        "dialect": grounder.dialect.name,
        "structure": turn.structure,
        "case": record.get("case"),
        "boxes": answer.as_dict()["boxes"],
    }


def predict(
    grounder: Grounder,
    data_dir: str | Path,
    split: str,
    out: str | Path,
    limit: int | None = None,
    resume: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Answer every turn of ``split``'s records and write one JSON row per turn to ``out``; returns the row count.

    Row: ``{"id", "record", "turn", "image", "modality", "task", "question", "annotation", "response",
    "width", "height", "negative", "dialect", "structure", "case", "boxes"}``; ``case`` is the record's
    patient key (the strict protocol resamples patients by it); question, annotation and
    response are in ``dialect`` (the model's); ``boxes`` are the response's parsed boxes
    (``[{"label", "box": [x0, y0, x1, y1]}]``) in pixels of the saved width x height image.
    ``resume``: keep the rows of an existing ``out`` and answer only the missing turns.
    ``progress(done, total)`` is called after each record.
    """
    records = read_records(data_dir, split)[:limit]
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, str] = {}
    if resume and out_path.is_file():
        for line in out_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                done[json.loads(line)["id"]] = line
    tmp = out_path.with_name(out_path.name + ".tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as handle:
        for n, record in enumerate(records, 1):
            image = Path(data_dir) / record["image"]
            turns = record_turns(record, grounder.dialect)
            lines = {i: done.get(f"{record['id']}/{i}") for i in range(len(turns))}
            missing = [i for i, line in lines.items() if line is None]
            if missing:  # a record's questions share its image: one batch
                asked = [grounder.encode(image, turns[i].question) for i in missing]
                for i, answer in zip(missing, grounder.answer(asked), strict=True):
                    lines[i] = json.dumps(_row(grounder, record, i, turns[i], answer), ensure_ascii=False)
            for i in range(len(turns)):
                handle.write(f"{lines[i]}\n")
                count += 1
            if progress is not None:
                progress(n, len(records))
    tmp.replace(out_path)
    return count
