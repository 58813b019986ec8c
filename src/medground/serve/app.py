"""The FastAPI app of ``medground serve``: thin routes over ``Grounder`` and ``InContextSegmenter``.

Images arrive inside the JSON body (data URLs or base64), are decoded in memory and never written to
disk or logs; the server never fetches a URL or opens a path a client names. FastAPI runs these sync
routes in a thread pool, so requests arrive concurrently; each model has its own gate
(:class:`_ModelGate`): a bounded number of calls let through, a bounded number waiting, each for a
bounded time. The local grounding model answers the calls let through together
(:class:`~medground.serve.batching.BatchingGrounder`: up to ``max_batch`` questions per ``generate``,
one ``generate`` at a time); the in-context model takes one call at a time. A grounding call and a
segmentation call may run at once. In proxy mode (:class:`~medground.serve.proxy.UpstreamGrounder`)
the upstream server batches, so its gate lets several calls through.

Limits come before the work they bound: :class:`~medground.serve.limits.RequestGuard` checks what the
headers say before any body byte is read; a route reads only image headers (:func:`open_image`), checks
the request's pixel budget and question length, and decodes pixels only once the model's gate lets it in
(:func:`load_pixels`); a request whose client has left gives up its place in the gate and its answer.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from medground.grounding import Grounded
from medground.icl.segmenter import DEFAULT_WEIGHTS, InContextSegmenter
from medground.io import ReadError, encode_png, encode_rle, image_array, mask_array
from medground.mllm.grounder import DEFAULT_MODEL, Answer, Grounder, SegmentedBox, mask_boxes
from medground.serve.batching import BatchingGrounder, ClientGoneError
from medground.serve.limits import Metrics, RequestGuard, cancel_event, error_response
from medground.serve.page import PUBLIC_PREFIX, mount_page
from medground.serve.proxy import UpstreamError, UpstreamGrounder
from medground.serve.schemas import (
    AssistantMessage,
    BoxMask,
    ChatCompletion,
    ChatCompletionChunk,
    ChatMessage,
    ChatRequest,
    Choice,
    ChunkChoice,
    CocoRLE,
    Delta,
    Grounding,
    GroundRequest,
    GroundResponse,
    Health,
    LabelledBox,
    MaskedBox,
    ModelCard,
    ModelList,
    SegmentRequest,
    SegmentResponse,
)
from medground.serve.volumes import SLICE_INFO, VolumeStore, volume_router
from medground.viz import fill_masks

__all__ = [
    "ServeSettings",
    "build_app",
    "check_pixel_budget",
    "create_app",
    "decode_image",
    "load_pixels",
    "open_image",
]

_DATA_URL = re.compile(r"data:image/[\w.+-]+;base64,(?P<data>.*)", re.DOTALL)
_SPACE = re.compile(r"\s+")
_URL = re.compile(r"[a-z][\w+.-]*:", re.IGNORECASE)  # http:, https:, file:, ftp:, ... (base64 has no colon)
_RULE = "only data URLs (data:image/png;base64,...) or base64 are accepted; the server never fetches URLs or opens files"
_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF")
"""Decoders tried on uploads (content decides, never a name); nothing that runs external programs."""


@dataclass(frozen=True)
class ServeSettings:
    """Limits and access: ``token`` (bearer; None = no check), request bodies up to ``max_body_bytes``,
    decoded images up to ``max_pixels`` (width x height, checked from the header before decoding).
    Every limit is checked before the work it bounds (:mod:`medground.serve.limits`)."""

    token: str | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    max_request_pixels: int = 32 * 1024 * 1024
    """Pixels of all images of one request together (query, supports and their masks), from their headers."""
    max_question_chars: int = 4000
    """Characters of a question (with a chat's earlier turns): longer ones get 400 before any tokenizing."""
    max_question_tokens: int = 1024
    """Tokens of the same text in the local model's tokenizer (not counted in proxy mode)."""
    max_inflight_bytes: int = 512 * 1024 * 1024
    """Body bytes all requests in progress may hold together; past it, 503 with Retry-After."""
    body_idle_s: float = 10.0
    """Longest wait for the next piece of a request body (then 408)."""
    body_timeout_s: float = 120.0
    """Longest time to receive a whole request body (then 408)."""
    browser_guard: bool = False
    """Without a token: refuse a foreign ``Origin`` and uploads whose content type a web page may send
    unasked (none, text/plain, form types). ``medground serve`` sets it on loopback without a token."""
    max_waiting: int = 8
    """Requests that may wait for the model while one runs; more get 503 with Retry-After."""
    max_batch: int = 8
    """Questions the local grounding model answers in one batch (1: one at a time)."""
    wait_s: float = 60.0
    """Longest wait for the model; past it, 503 with Retry-After (a running call is not interrupted)."""
    allowed_hosts: tuple[str, ...] | None = None
    """Host-header names answered (a guard against DNS rebinding); None answers any."""
    max_volume_bytes: int = 256 * 1024 * 1024
    """Body limit of a volume upload (POST /v1/volumes), and of what it unpacks to (a gunzipped NIfTI as
    its header sizes it, a zip's files)."""
    max_voxels: int = 64 * 1024 * 1024
    """Voxels of one uploaded volume (checked from the NIfTI header before inflating)."""
    max_volumes: int = 8
    max_volume_store_bytes: int = 1024**3
    """Uploaded volumes held in memory: past either bound the least recently used are dropped."""


class _ModelGate:
    """``running`` model calls at a time, at most ``max_waiting`` requests waiting, each at most ``wait_s``.

    :meth:`acquire` and :meth:`release` may run on different threads (a streamed answer is generated
    on a thread of its own, which releases the gate when it is done).
    """

    def __init__(self, max_waiting: int, wait_s: float, running: int = 1) -> None:
        self.runs = threading.BoundedSemaphore(running)
        self.slots = threading.BoundedSemaphore(max_waiting + running)  # the running calls + the waiting ones
        self.max_waiting, self.wait_s = max_waiting, wait_s

    def acquire(self, cancelled: threading.Event | None = None) -> None:
        """Wait for the model; 503 with Retry-After when too many wait or the wait is too long,
        :class:`~medground.serve.batching.ClientGoneError` when ``cancelled`` is set while waiting."""
        busy = {"Retry-After": "1"}
        if not self.slots.acquire(blocking=False):
            raise HTTPException(503, f"server busy: {self.max_waiting} requests already waiting", busy)
        deadline = time.monotonic() + self.wait_s
        while not self.runs.acquire(timeout=min(0.1, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline or (cancelled is not None and cancelled.is_set()):
                self.slots.release()
                if cancelled is not None and cancelled.is_set():
                    raise ClientGoneError("the client left while waiting for the model")
                raise HTTPException(503, f"server busy: waited {self.wait_s:g} s for the model", busy)

    def release(self) -> None:
        self.runs.release()
        self.slots.release()

    @contextmanager
    def __call__(self, cancelled: threading.Event | None = None) -> Iterator[None]:
        self.acquire(cancelled)
        try:
            yield
        finally:
            self.release()


def open_image(text: str, what: str, max_pixels: int) -> Image.Image:
    """A PIL image opened from a ``data:image/...;base64,`` URL or bare base64 (whitespace and line
    breaks allowed), its header read but its pixels not yet decoded (:func:`load_pixels` does that).

    Raises HTTPException 400 for URLs, paths (not base64) or undecodable data (naming ``what``), 413
    for more than ``max_pixels`` pixels (read from the header, before the pixels are inflated).
    """
    match = _DATA_URL.fullmatch(text.strip())
    if match is None and _URL.match(text.strip()):
        raise HTTPException(400, f"{what}: {_RULE}")
    packed = _SPACE.sub("", match["data"] if match else text)
    try:
        raw = base64.b64decode(packed, validate=True)
    except (binascii.Error, ValueError) as error:
        raise HTTPException(
            400,
            f"{what}: not valid base64 ({error}): expected the characters A-Z a-z 0-9 + / and = padding "
            f"to a multiple of 4 (got {len(packed)} characters); {_RULE}",
        ) from error
    try:
        image = Image.open(io.BytesIO(raw), formats=_FORMATS)
    except Image.DecompressionBombError as error:  # PIL's own ceiling, far above max_pixels by default
        raise HTTPException(413, f"{what}: {error}") from error
    except Exception as error:
        raise HTTPException(
            400, f"{what}: not a readable {'/'.join(_FORMATS)} image ({type(error).__name__})"
        ) from error
    width, height = image.size
    if width * height > max_pixels:
        raise HTTPException(413, f"{what}: {width}x{height} is over the {max_pixels}-pixel limit")
    return image


def load_pixels(image: Image.Image, what: str) -> Image.Image:
    """``image`` (from :func:`open_image`) with its pixels decoded; 400 naming ``what`` when they cannot be."""
    try:
        image.load()
    except Exception as error:
        raise HTTPException(400, f"{what}: the image data is truncated or corrupt ({error})") from error
    return image


def decode_image(text: str, what: str, max_pixels: int) -> Image.Image:
    """:func:`open_image` then :func:`load_pixels`: a decoded PIL image (same errors)."""
    return load_pixels(open_image(text, what, max_pixels), what)


def check_pixel_budget(images: list[Image.Image], budget: int) -> None:
    """413 when the images of one request (headers read, pixels not yet decoded) have more than
    ``budget`` pixels together."""
    total = sum(image.width * image.height for image in images)
    if total > budget:
        raise HTTPException(
            413,
            f"the request's {len(images)} images hold {total} pixels together, over the {budget}-pixel "
            "budget of one request; send fewer or smaller images",
        )


def _array(image: Image.Image, what: str) -> np.ndarray:
    """An uploaded image read as medground reads image files (:func:`medground.io.image_array`: (H, W)
    uint8 grey or (H, W, 3) RGB); 400 if unusable."""
    try:
        return image_array(image, what)
    except ReadError as error:
        raise HTTPException(400, str(error)) from error


def _mask(image: Image.Image, what: str) -> np.ndarray:
    """An uploaded mask read as medground reads mask files (:func:`medground.io.mask_array`); 400 if unusable."""
    try:
        return mask_array(image, what)
    except ReadError as error:
        raise HTTPException(400, str(error)) from error


def _png(array: np.ndarray) -> str:
    return base64.b64encode(encode_png(array)).decode("ascii")


def _answer_box(g: Grounded) -> LabelledBox:
    """A box of an answer for the client; with its mask (PNG and COCO RLE) when it has one."""
    if not isinstance(g, SegmentedBox):
        return LabelledBox(label=g.label, box=g.box.as_list())
    mask = BoxMask(
        area=int(g.mask.sum()),
        mask_png=_png(g.mask.astype(np.uint8) * 255),
        rle=CocoRLE(**encode_rle(g.mask)),
    )
    return MaskedBox(label=g.label, box=g.box.as_list(), mask=mask)


def _model_id(path: str | Path | None, default: Path, name: str) -> str:
    return name if path is None or Path(path).resolve() == default.resolve() else Path(path).name


def _text(
    message: ChatMessage, grounder: Grounder | BatchingGrounder | UpstreamGrounder, size: tuple[int, int]
) -> str:
    """A message's text in the model's dialect: text parts as they are, box parts written as box text."""
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    pieces = []
    for part in message.content:
        if part.type == "text":
            pieces.append(part.text)
        elif part.type == "box":
            try:
                pieces.append(grounder.prompt("{box}", part.box, *size))
            except ValueError as error:
                raise HTTPException(400, str(error)) from error
    return " ".join(p.strip() for p in pieces if p.strip())


def _conversation(
    messages: list[ChatMessage],
    grounder: Grounder | BatchingGrounder | UpstreamGrounder,
    max_pixels: int,
    store: VolumeStore,
) -> tuple[Image.Image, list[tuple[str, str]], str]:
    """(image, earlier (question, answer) turns, last question) of a chat; 400 for what the model cannot
    take. The image's header is read, its pixels are not decoded yet (:func:`load_pixels`).

    System messages are not passed on: the model answers under the system prompt it was trained with.
    """
    turns = [m for m in messages if m.role in ("user", "assistant")]
    images = [
        (i, part)
        for i, m in enumerate(turns)
        if isinstance(m.content, list)
        for part in m.content
        if part.type in ("image_url", "volume_slice")
    ]
    if len(images) != 1 or turns[images[0][0]].role != "user":
        raise HTTPException(
            400, f"a conversation needs exactly one image, in a user message (got {len(images)})"
        )
    part = images[0][1]
    picture = (  # pixels decoded later, once the model gate lets the request in
        store.picture(part.volume_slice)
        if part.type == "volume_slice"
        else open_image(part.image_url.url, "image_url", max_pixels)
    )
    roles = [m.role for m in turns]
    if not roles or roles[-1] != "user" or any(r == roles[i + 1] for i, r in enumerate(roles[:-1])):
        raise HTTPException(400, "messages must alternate user and assistant and end with a user message")
    if roles[0] != "user":
        raise HTTPException(400, "the conversation must start with a user message")
    texts = [_text(m, grounder, picture.size) for m in turns]
    history = list(zip(texts[:-1:2], texts[1:-1:2], strict=True))
    return picture, history, texts[-1]


def _tokenizer(grounder: Grounder | BatchingGrounder | UpstreamGrounder) -> Any | None:
    """The local model's tokenizer (None in proxy mode: the upstream counts its own tokens)."""
    local = grounder.grounder if isinstance(grounder, BatchingGrounder) else grounder
    return local.processor.tokenizer if isinstance(local, Grounder) else None


def check_question(texts: list[str], settings: ServeSettings, tokenizer: Any | None) -> None:
    """400 when a question with its earlier turns is over ``max_question_chars`` characters (checked
    first, so a huge text is never tokenized) or ``max_question_tokens`` tokens of ``tokenizer``."""
    chars = sum(len(t) for t in texts)
    if chars > settings.max_question_chars:
        raise HTTPException(
            400,
            f"the question is {chars} characters long (with earlier turns), over the limit of "
            f"{settings.max_question_chars}; ask a shorter question",
        )
    if tokenizer is not None:
        tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        if tokens > settings.max_question_tokens:
            raise HTTPException(
                400,
                f"the question is {tokens} tokens long (with earlier turns), over the limit of "
                f"{settings.max_question_tokens}; ask a shorter question",
            )


def _status(error: Exception) -> int:
    """The HTTP status an error stands for, for the error event of a stream already answered 200."""
    if isinstance(error, HTTPException):
        return error.status_code
    if isinstance(error, ValueError):
        return 400
    return 502 if isinstance(error, UpstreamError) else 500


def create_app(
    grounder: Grounder | BatchingGrounder | UpstreamGrounder,
    segmenter: InContextSegmenter,
    settings: ServeSettings | None = None,
    model_ids: tuple[str, str] = ("bird-nano", "medground-icl"),
) -> FastAPI:
    """The app over loaded models; ``model_ids``: the names /v1/models lists (grounding, in-context).

    ``grounder``: a local model (one call at a time), a local model behind a
    :class:`~medground.serve.batching.BatchingGrounder` (as :func:`build_app` serves it: calls let in
    together share batches), or an upstream server in proxy mode (several calls at once).
    """
    settings = settings or ServeSettings()
    ground_id, icl_id = model_ids
    gate = _ModelGate(settings.max_waiting, settings.wait_s, getattr(grounder, "max_concurrent", 1))
    icl_gate = _ModelGate(settings.max_waiting, settings.wait_s)
    store = VolumeStore(settings.max_volumes, settings.max_volume_store_bytes)
    tokenizer = _tokenizer(grounder)

    def _open(text: str, what: str) -> Image.Image:
        return open_image(text, what, settings.max_pixels)

    metrics = Metrics()
    started = int(time.time())
    app = FastAPI(title="medground", version="1", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's own, and Starlette's 404/405
    async def _http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return error_response(error.status_code, str(error.detail), error.headers)

    @app.exception_handler(ClientGoneError)
    async def _cancelled(_: Request, error: ClientGoneError) -> JSONResponse:
        return error_response(499, f"client closed the request: {error}")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(400, f"{where}: {first.get('msg')}" if where else str(first.get("msg")))

    def _grounding(answer: Answer, picture: Image.Image) -> Grounding:
        boxes = [_answer_box(g) for g in answer.boxes]
        where = picture.info.get(SLICE_INFO)  # the volume slice the picture is, if it is one
        return Grounding(boxes=boxes, width=picture.width, height=picture.height, slice=where)

    def _segmented(answer: Answer, picture: Image.Image, cancelled: threading.Event) -> Answer:
        """``answer`` with each box's mask from the served segmenter (through its own gate)."""
        try:
            with icl_gate(cancelled):
                return Answer(answer.text, [*mask_boxes(segmenter, picture, answer.boxes)])
        except ValueError as error:
            raise HTTPException(400, str(error)) from error

    def _call(
        picture: Image.Image,
        question: str,
        box: list[int] | None,
        history: list[tuple[str, str]],
        cancelled: threading.Event,
        on_text: Callable[[str], None] | None = None,
    ) -> Answer:
        """The grounder's answer, given up once ``cancelled`` is set: a batched local model stops its row;
        other grounders stop a streamed answer at its next piece (in proxy mode the upstream stream is
        closed, which ends the upstream's work too)."""
        if isinstance(grounder, BatchingGrounder):
            return grounder.ask(picture, question, box, history, on_text=on_text, cancelled=cancelled)
        if on_text is None:
            return grounder.ask(picture, question, box, history)

        def hand_on(piece: str) -> None:
            if cancelled.is_set():
                raise ClientGoneError("the client left mid-answer")
            on_text(piece)

        return grounder.ask(picture, question, box, history, on_text=hand_on)

    def _ask(
        picture: Image.Image,
        question: str,
        box: list[int] | None,
        history: list[tuple[str, str]],
        cancelled: threading.Event,
        segment: bool = False,
    ) -> tuple[str, Grounding]:
        """Answer about ``picture`` (from :func:`open_image`: decoded once the gate lets the call in)."""
        check_pixel_budget([picture], settings.max_request_pixels)
        try:
            with gate(cancelled):
                picture = load_pixels(picture, "image").convert("RGB")
                answer = _call(picture, question, box, history, cancelled)
        except ValueError as error:
            raise HTTPException(400, str(error)) from error
        except UpstreamError as error:
            raise HTTPException(502, str(error)) from error
        if segment:
            answer = _segmented(answer, picture, cancelled)
        return answer.text, _grounding(answer, picture)

    def _ask_streamed(
        picture: Image.Image,
        question: str,
        history: list[tuple[str, str]],
        cancelled: threading.Event,
        segment: bool = False,
    ) -> tuple[Image.Image, queue.Queue[str | Answer | Exception]]:
        """Start answering on a thread of its own (holding the gate until done): returns the decoded
        picture and a queue that gets each text piece as it is decoded, then the :class:`Answer` (or the
        exception that stopped it).

        The gate is taken and the picture decoded here, so a busy server or a corrupt image is answered
        (503, 400) before the stream starts; the thread releases the gate even when the client leaves
        mid-answer, and stops generating once ``cancelled`` is set.
        """
        check_pixel_budget([picture], settings.max_request_pixels)
        pieces: queue.Queue[str | Answer | Exception] = queue.Queue()
        gate.acquire(cancelled)
        try:
            picture = load_pixels(picture, "image_url").convert("RGB")
        except HTTPException:
            gate.release()
            raise

        def work() -> None:
            try:
                answer = _call(picture, question, None, history, cancelled, on_text=pieces.put)
                pieces.put(_segmented(answer, picture, cancelled) if segment else answer)
            except Exception as error:  # handed to the stream, which reports it in its last event
                pieces.put(error)
            finally:
                gate.release()

        threading.Thread(target=work, name="medground-stream", daemon=True).start()
        return picture, pieces

    @app.get("/health", response_model=Health)
    def health() -> Health:
        return Health(models=[ground_id, icl_id])

    @app.get("/v1/models", response_model=ModelList)
    def models() -> ModelList:
        return ModelList(data=[ModelCard(id=m, created=started) for m in (ground_id, icl_id)])

    @app.post("/v1/ground", response_model=GroundResponse)
    def ground(body: GroundRequest, request: Request) -> GroundResponse:
        check_question([body.question], settings, tokenizer)  # before the image is even opened
        picture = store.image_or_slice(body.image, body.volume_slice, ("image", "volume_slice"), _open)
        text, found = _ask(picture, body.question, body.box, [], cancel_event(request.scope), body.segment)
        return GroundResponse(
            model=ground_id,
            answer=text,
            boxes=found.boxes,
            width=found.width,
            height=found.height,
            slice=found.slice,
        )

    @app.post("/v1/chat/completions", response_model=None)
    def chat(body: ChatRequest, request: Request) -> ChatCompletion | StreamingResponse:
        if body.model not in (None, ground_id):
            raise HTTPException(
                404, f"model {body.model!r} is not served here; /v1/models lists {ground_id!r}"
            )
        picture, history, question = _conversation(body.messages, grounder, settings.max_pixels, store)
        check_question([*(t for turn in history for t in turn), question], settings, tokenizer)
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        segment = body.medground is not None and body.medground.segment
        cancelled = cancel_event(request.scope)
        if not body.stream:
            text, found = _ask(picture, question, None, history, cancelled, segment)
            message = AssistantMessage(content=text, medground=found)
            return ChatCompletion(
                id=reply_id, created=created, model=ground_id, choices=[Choice(message=message)]
            )
        picture, pieces = _ask_streamed(picture, question, history, cancelled, segment)

        def event(choice: ChunkChoice) -> str:
            """One SSE event; the delta's unset fields are left out, the ``medground`` field is whole."""
            chunk = ChatCompletionChunk(id=reply_id, created=created, model=ground_id, choices=[choice])
            data = chunk.model_dump(mode="json", exclude_none=True)
            if choice.delta.medground is not None:
                data["choices"][0]["delta"]["medground"] = choice.delta.medground.model_dump(mode="json")
            return f"data: {json.dumps(data)}\n\n"

        def events() -> Iterator[str]:
            # each piece is sent as soon as the model has decoded it; the boxes come with the last chunk
            yield event(ChunkChoice(delta=Delta(role="assistant", content="")))
            while True:
                item = pieces.get()
                if isinstance(item, str):
                    yield event(ChunkChoice(delta=Delta(content=item)))
                elif isinstance(item, Exception):  # the 200 is sent: OpenAI's in-stream error event
                    status = _status(item)
                    kind = "invalid_request_error" if status < 500 else "server_error"
                    message = item.detail if isinstance(item, HTTPException) else str(item)
                    error = {"message": message, "type": kind, "code": status}
                    yield f"data: {json.dumps({'error': error})}\n\ndata: [DONE]\n\n"
                    return
                else:
                    last = ChunkChoice(delta=Delta(medground=_grounding(item, picture)), finish_reason="stop")
                    yield event(last) + "data: [DONE]\n\n"
                    return

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/segment", response_model=SegmentResponse)
    def segment(body: SegmentRequest, request: Request) -> SegmentResponse:
        query_image = store.image_or_slice(body.query, body.query_slice, ("query", "query_slice"), _open)
        names = [(f"support[{i}].image", f"support[{i}].mask") for i in range(len(body.support))]
        opened = [
            (_open(p.image, a), _open(p.mask, b)) for p, (a, b) in zip(body.support, names, strict=True)
        ]
        check_pixel_budget([query_image, *(i for pair in opened for i in pair)], settings.max_request_pixels)
        try:
            with icl_gate(cancel_event(request.scope)):  # pixels decoded only once the gate lets it in
                query = _array(load_pixels(query_image, "query"), "query")
                pairs = [
                    (_array(load_pixels(image, a), a), _mask(load_pixels(mask, b), b))
                    for (image, mask), (a, b) in zip(opened, names, strict=True)
                ]
                prob = segmenter.segment(query, support=pairs, text=body.text or None, box=body.box)
        except ValueError as error:
            raise HTTPException(400, str(error)) from error
        mask = (np.asarray(prob) >= body.threshold).astype(np.uint8)
        rle = encode_rle(mask)
        return SegmentResponse(
            model=icl_id,
            width=int(mask.shape[1]),
            height=int(mask.shape[0]),
            area=int(mask.sum()),
            mask_png=_png(mask * 255),
            rle=CocoRLE(**rle),
            overlay_png=_png(fill_masks(query, [mask])),
            slice=query_image.info.get(SLICE_INFO),
        )

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.text(), media_type="text/plain; version=0.0.4")

    app.include_router(volume_router(store, settings.max_voxels, settings.max_volume_bytes))
    mount_page(app, store, settings.max_pixels)
    app.add_middleware(  # the outermost layer: nothing reads a body before it has checked the headers
        RequestGuard,
        metrics=metrics,
        routes=lambda: app.routes,
        max_body_bytes=settings.max_body_bytes,
        limits={"/v1/volumes": settings.max_volume_bytes},
        max_inflight_bytes=settings.max_inflight_bytes,
        token=settings.token,
        allowed_hosts=settings.allowed_hosts,
        browser_guard=settings.browser_guard,
        public=("/health", "/"),
        public_prefixes=(PUBLIC_PREFIX,),
        body_idle_s=settings.body_idle_s,
        body_timeout_s=settings.body_timeout_s,
    )
    return app


SERVED_ICL_SIZE = 64
"""Working size of the shipped in-context weights when served: their training size. At their own default
(256) ``/v1/segment`` with k = 3 took 2.77 s at p95 under 4 clients on the 2-core VM, against a 2 s bar met
at 64 (bench/RESULTS.md, "Serving under load"); ``--icl-size 256`` serves thin structures better."""


def build_app(
    model: str | Path | None = None,
    icl_model: str | Path | None = None,
    settings: ServeSettings | None = None,
    upstream: UpstreamGrounder | None = None,
    icl_size: int | None = None,
) -> FastAPI:
    """Load the grounding and in-context models (the shipped ones by default) and make the app.

    ``upstream``: proxy mode, grounding answered by that server (listed under its model name);
    segmentation stays local. ``icl_size``: the in-context model's working resolution; default
    :data:`SERVED_ICL_SIZE` for the shipped weights (latency), a given folder's own size otherwise.
    """
    icl_id = _model_id(icl_model, DEFAULT_WEIGHTS, "medground-icl")
    if icl_size is None and icl_model is None:
        icl_size = SERVED_ICL_SIZE
    segmenter = InContextSegmenter.from_pretrained(icl_model, size=icl_size)
    if upstream is not None:
        return create_app(upstream, segmenter, settings, (upstream.model, icl_id))
    ids = (_model_id(model, DEFAULT_MODEL, "bird-nano"), icl_id)
    settings = settings or ServeSettings()
    grounder = BatchingGrounder(Grounder.from_pretrained(model), settings.max_batch)
    return create_app(grounder, segmenter, settings, ids)
