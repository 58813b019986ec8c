"""Request and response models of ``medground serve`` (pydantic), in one place.

Boxes everywhere are ``[x0, y0, x1, y1]`` in pixels of the image the client sent (x1, y1 exclusive).
The chat models follow OpenAI's chat-completions format; medground's additions (the ``box`` content
part, the ``medground`` field of a message) are extensions that stock clients ignore.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

BoxList = Annotated[list[int], Field(min_length=4, max_length=4, description="[x0, y0, x1, y1] pixels")]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    models: list[str]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "medground"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class LabelledBox(BaseModel):
    label: str | None
    box: BoxList


class BoxMask(BaseModel):
    """A box's mask in pixels of the client's image (every mask pixel inside the box)."""

    area: int = Field(description="mask pixels")
    mask_png: str = Field(description="base64 PNG, 0/255, the image's size")
    rle: CocoRLE


class MaskedBox(LabelledBox):
    """A box of an answer asked to segment, with its mask."""

    mask: BoxMask


AnswerBox = MaskedBox | LabelledBox
"""A box of an answer: with its mask when the request asked to segment, else label and box only."""


class GroundRequest(BaseModel):
    """``image``: a ``data:image/...;base64,`` URL or bare base64 of a PNG/JPEG/... file; or
    ``volume_slice`` (a slice of an uploaded volume) instead."""

    image: str | None = None
    volume_slice: SliceRef | None = None
    question: str = Field(min_length=1)
    box: BoxList | None = None
    segment: bool = Field(False, description="also segment each answer box (masks in the response)")


class GroundResponse(BaseModel):
    model: str
    answer: str
    boxes: list[AnswerBox]
    width: int
    height: int
    slice: SliceInfo | None = None


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    url: str
    detail: str | None = None


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


class BoxPart(BaseModel):
    """medground's extension: a region the user refers to, in pixels of the conversation's image."""

    type: Literal["box"]
    box: BoxList


ContentPart = Annotated["TextPart | ImagePart | BoxPart | VolumeSlicePart", Field(discriminator="type")]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None


class ChatRequest(BaseModel):
    """OpenAI's request; sampling options (temperature, top_p, ...) are accepted and ignored: decoding is greedy."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    medground: ChatOptions | None = None


class ChatOptions(BaseModel):
    """medground's request extension (``"medground": {"segment": true}``; stock clients never send it)."""

    segment: bool = Field(False, description="also segment each answer box (masks in the reply)")


class Grounding(BaseModel):
    """The extension field of an answer: its boxes in pixels of the client's image (width x height)."""

    boxes: list[AnswerBox]
    width: int
    height: int
    slice: SliceInfo | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    medground: Grounding


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] = "stop"


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    medground: Grounding | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]


class SupportPair(BaseModel):
    """One support example: an image and its mask (non-zero = the structure), same size, data URL or base64."""

    image: str
    mask: str


class SegmentRequest(BaseModel):
    query: str | None = None
    query_slice: SliceRef | None = Field(None, description="a volume slice in place of query")
    support: list[SupportPair] = Field(default_factory=list, max_length=32)
    text: str | None = None
    box: BoxList | None = Field(None, description="the object's box in the query's pixels (box prompt)")
    threshold: float = Field(0.5, gt=0.0, lt=1.0)


class CocoRLE(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: str


class SegmentResponse(BaseModel):
    model: str
    width: int
    height: int
    area: int = Field(description="foreground pixels")
    mask_png: str = Field(description="base64 PNG, 0/255, the query's size")
    rle: CocoRLE
    overlay_png: str = Field(description="base64 PNG of the mask blended on the query")
    slice: SliceInfo | None = None


class ErrorBody(BaseModel):
    message: str
    type: str = "invalid_request_error"


class ErrorResponse(BaseModel):
    error: ErrorBody


# Volumes (medground.serve.volumes): a slice of an uploaded volume used in place of an image.

Plane = Literal["axial", "coronal", "sagittal"]


class SliceRef(BaseModel):
    """A display slice of a volume uploaded to ``POST /v1/volumes``, used in place of an image."""

    volume: str = Field(min_length=1, max_length=64, description="the id POST /v1/volumes returned")
    plane: Plane
    index: int = Field(ge=0, description="slice number along the plane's axis, 0-based")
    window: str | None = Field(None, description="'percentiles' or a CT preset; default: the volume's")


class SliceInfo(BaseModel):
    """The slice an answer's boxes and masks refer to: their pixels are this slice's (width x height);
    ``edges`` gives the patient direction at each image edge (radiological: left 'R' on axial)."""

    volume: str
    plane: Plane
    index: int
    window: str
    width: int
    height: int
    edges: dict[str, str] = Field(description="{'left', 'right', 'top', 'bottom'} -> R/L/A/P/S/I")


class PlaneInfo(BaseModel):
    count: int = Field(description="slices along this plane")
    width: int
    height: int
    pixel_mm: list[float] = Field(description="[row, column] pixel size in mm")
    edges: dict[str, str]


class VolumeInfo(BaseModel):
    """An uploaded volume: canonical RAS+ shape (X, Y, Z) and spacing, display windows, and per plane the
    slice count, slice size and edge labels."""

    id: str
    shape: list[int]
    spacing: list[float]
    window: str = Field(description="the default window: CT soft-tissue for CT, else 'percentiles'")
    windows: list[str]
    planes: dict[str, PlaneInfo]


class VolumeSlicePart(BaseModel):
    """medground's extension: a volume slice in place of an ``image_url`` part in a chat message."""

    type: Literal["volume_slice"]
    volume_slice: SliceRef
