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


class GroundRequest(BaseModel):
    """``image``: a ``data:image/...;base64,`` URL or bare base64 of a PNG/JPEG/... file."""

    image: str
    question: str = Field(min_length=1)
    box: BoxList | None = None


class GroundResponse(BaseModel):
    model: str
    answer: str
    boxes: list[LabelledBox]
    width: int
    height: int


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


ContentPart = Annotated[TextPart | ImagePart | BoxPart, Field(discriminator="type")]


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


class Grounding(BaseModel):
    """The extension field of an answer: its boxes in pixels of the client's image (width x height)."""

    boxes: list[LabelledBox]
    width: int
    height: int


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
    query: str
    support: list[SupportPair] = Field(default_factory=list, max_length=32)
    text: str | None = None
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


class ErrorBody(BaseModel):
    message: str
    type: str = "invalid_request_error"


class ErrorResponse(BaseModel):
    error: ErrorBody
