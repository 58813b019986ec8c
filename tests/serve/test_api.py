"""The HTTP API as a client sees it: grounding, chat (with the real ``openai`` package), segmentation,
metrics, and the refusals (URLs, bad images, limits, tokens)."""

from __future__ import annotations

import base64
import io
import json
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools import mask as coco_mask

from medground.mllm.data import encode_prompt
from medground.serve.app import ServeSettings, create_app

from .conftest import CXR, HC18, data_url

QUESTION = "Where are both lungs?"
SAMPLE_XRAY_2 = CXR.with_name("CHNCXR_0001_0.png")


@pytest.fixture(scope="module")
def client(models) -> TestClient:
    return TestClient(create_app(*models))


def _png_array(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


def test_health_and_models_list_both_models(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "models": ["bird-nano", "medground-icl"]}
    listed = client.get("/v1/models").json()
    assert listed["object"] == "list"
    assert [(m["id"], m["object"]) for m in listed["data"]] == [
        ("bird-nano", "model"),
        ("medground-icl", "model"),
    ]


def test_ground_answers_as_the_grounder_does_with_boxes_in_client_pixels(client: TestClient, models) -> None:
    grounder, _ = models
    reply = client.post("/v1/ground", json={"image": data_url(CXR), "question": QUESTION})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    direct = grounder.ask(CXR, QUESTION)  # the library call the route wraps, on the file itself
    assert body["answer"] == direct.text
    assert (body["width"], body["height"]) == (750, 734)
    assert body["boxes"] == [{"label": g.label, "box": g.box.as_list()} for g in direct.boxes]
    assert body["boxes"], "the shipped model boxes the lungs of this held-out X-ray"
    for found in body["boxes"]:
        x0, y0, x1, y1 = found["box"]
        assert 0 <= x0 < x1 <= 750 and 0 <= y0 < y1 <= 734


def test_ground_with_a_box_outside_the_image_is_refused(client: TestClient) -> None:
    reply = client.post(
        "/v1/ground", json={"image": data_url(CXR), "question": "What is at {box}?", "box": [0, 0, 900, 10]}
    )
    assert reply.status_code == 400
    assert "outside the 750x734 image" in reply.json()["error"]["message"]


@pytest.mark.parametrize(
    ("image", "status", "words"),
    [
        ("https://example.org/cxr.png", 400, "only data URLs"),
        ("/etc/passwd", 400, "only data URLs"),
        ("C:\\Windows\\cxr.png", 400, "only data URLs"),
        ("../cxr.png", 400, "only data URLs"),
        ("file:///etc/passwd", 400, "only data URLs"),
        ("data:image/png;base64,%%%", 400, "not valid base64"),
        (base64.b64encode(b"plain text, not a picture").decode(), 400, "not a readable PNG/JPEG"),
        (base64.b64encode(b"%!PS-Adobe-3.0 EPSF-3.0\n").decode(), 400, "not a readable PNG/JPEG"),
        (base64.b64encode(CXR.read_bytes()[:2000]).decode(), 400, "truncated or corrupt"),
    ],
)
def test_bad_images_get_a_400_naming_the_reason(
    client: TestClient, image: str, status: int, words: str
) -> None:
    reply = client.post("/v1/ground", json={"image": image, "question": QUESTION})
    assert reply.status_code == status
    assert words in reply.json()["error"]["message"]


def test_malformed_json_gets_a_400(client: TestClient) -> None:
    reply = client.post("/v1/ground", content=b'{"image": ', headers={"content-type": "application/json"})
    assert reply.status_code == 400
    assert client.get("/health").status_code == 200


def test_pixel_and_body_limits(models) -> None:
    small = TestClient(create_app(*models, ServeSettings(max_pixels=100 * 100, max_body_bytes=50_000)))
    # a 2000 x 2000 PNG of zeros compresses to a few kB: refused from its header, before inflating
    buffer = io.BytesIO()
    Image.new("L", (2000, 2000)).save(buffer, format="PNG")
    bomb = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    reply = small.post("/v1/ground", json={"image": bomb, "question": QUESTION})
    assert reply.status_code == 413
    assert "2000x2000 is over the 10000-pixel limit" in reply.json()["error"]["message"]
    big = {"image": data_url(CXR), "question": QUESTION}  # the X-ray is over 50 kB
    reply = small.post("/v1/ground", json=big)
    assert reply.status_code == 413
    assert "over the 50000-byte limit" in reply.json()["error"]["message"]
    chunks = iter([b'{"image": "', b"A" * 60_000, b'", "question": "x"}'])  # no Content-Length
    reply = small.post("/v1/ground", content=chunks, headers={"content-type": "application/json"})
    assert reply.status_code == 413


def test_bearer_token(models) -> None:
    guarded = TestClient(create_app(*models, ServeSettings(token="s3cret")))
    assert guarded.get("/health").status_code == 200  # liveness probes need no token
    assert guarded.get("/v1/models").status_code == 401
    assert guarded.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert guarded.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_segment_returns_the_segmenters_mask_as_png_rle_and_overlay(client: TestClient, models) -> None:
    _, segmenter = models
    support = [
        (HC18 / "images" / f"{i}_HC.png", HC18 / "masks" / f"{i}_HC_mask.png") for i in ("000", "003", "006")
    ]
    query = HC18 / "images" / "009_HC.png"
    body = {
        "query": data_url(query),
        "support": [{"image": data_url(img), "mask": data_url(msk)} for img, msk in support],
    }
    reply = client.post("/v1/segment", json=body)
    assert reply.status_code == 200, reply.text
    out = reply.json()
    expected = (segmenter.segment(query, support=support) >= 0.5).astype(np.uint8)
    png = _png_array(out["mask_png"])
    assert png.shape == expected.shape == (out["height"], out["width"])
    assert np.array_equal(png > 0, expected.astype(bool))
    rle = {"size": out["rle"]["size"], "counts": out["rle"]["counts"].encode()}
    assert np.array_equal(coco_mask.decode(rle), expected)
    assert out["area"] == int(expected.sum()) > 0
    overlay = _png_array(out["overlay_png"])
    assert overlay.shape == (*expected.shape, 3)


def _png_url(array: np.ndarray, mode: str) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def test_uploaded_masks_are_read_as_mask_files_are(client: TestClient) -> None:
    """An RGBA mask (white lesion on a transparent background) means its grey channel, not its alpha: the
    answer equals the one for the same mask saved grey; a mask with differing colour channels is refused."""
    image = data_url(HC18 / "images" / "000_HC.png")
    grey = np.asarray(Image.open(HC18 / "masks" / "000_HC_mask.png").convert("L"))
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255) * (grey > 0)])  # alpha 0 off the lesion
    query = data_url(HC18 / "images" / "009_HC.png")

    def segment(mask_url: str):
        return client.post(
            "/v1/segment", json={"query": query, "support": [{"image": image, "mask": mask_url}]}
        )

    as_grey, as_rgba = segment(_png_url(grey, "L")), segment(_png_url(rgba, "RGBA"))
    assert as_grey.status_code == as_rgba.status_code == 200
    assert as_rgba.json()["rle"] == as_grey.json()["rle"]
    colour = np.dstack([grey, np.zeros_like(grey), grey // 2])
    refused = segment(_png_url(colour, "RGB"))
    assert refused.status_code == 400 and "colour mask" in refused.json()["error"]["message"]


def test_segment_without_support_or_text_is_refused(client: TestClient) -> None:
    reply = client.post("/v1/segment", json={"query": data_url(HC18 / "images" / "009_HC.png")})
    assert reply.status_code == 400
    assert "support pair or a text prompt" in reply.json()["error"]["message"]


def test_metrics_count_requests_by_route_and_status(models) -> None:
    fresh = TestClient(create_app(*models))
    fresh.get("/health")
    fresh.get("/health")
    fresh.post("/v1/ground", json={"image": "https://x.org/a.png", "question": "q"})
    text = fresh.get("/metrics").text
    assert 'medground_requests_total{route="/health",method="GET",status="200"} 2' in text
    assert 'medground_requests_total{route="/v1/ground",method="POST",status="400"} 1' in text
    assert 'medground_request_seconds_count{route="/health"} 2' in text


def test_prompt_with_history_is_rendered_like_training(models) -> None:
    grounder, _ = models
    image = Image.new("RGB", (56, 56))
    ids = encode_prompt(grounder.processor, image, "Q2", [("Q1", "A1")])["input_ids"][0].tolist()
    text = grounder.processor.tokenizer.decode(ids)
    pads = "<|image_pad|>" * 4  # 56 x 56 px = 2 x 2 patches of 28 after merging
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n<|vision_start|>{pads}<|vision_end|>Q1<|im_end|>\n"
        "<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n"
    )


class _Spy:
    """The real grounder, recording what each ask receives."""

    def __init__(self, grounder) -> None:
        self.grounder, self.calls = grounder, []

    def prompt(self, *args):
        return self.grounder.prompt(*args)

    def ask(self, image, question, box=None, history=()):
        self.calls.append((image.size, question, list(history)))
        return self.grounder.ask(image, question, box, history)


def test_chat_box_parts_are_written_in_the_models_dialect_and_history_is_passed(models) -> None:
    spy = _Spy(models[0])
    chat = TestClient(create_app(spy, models[1]))
    messages = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(CXR)}},
                {"type": "text", "text": "What is at"},
                {"type": "box", "box": [0, 0, 375, 367]},
            ],
        },
        {"role": "assistant", "content": "the right lung"},
        {"role": "user", "content": [{"type": "text", "text": "Where are both lungs?"}]},
    ]
    reply = chat.post("/v1/chat/completions", json={"model": "bird-nano", "messages": messages})
    assert reply.status_code == 200, reply.text
    # bird-nano's dialect is qwen2-vl-grid (its medground.json): last pixel column 374 of 750 ->
    # floor(374000 / 750) = 498; row 366 of 734 -> 498
    first = "What is at <|box_start|>(0,0),(498,498)<|box_end|>"
    assert spy.calls == [((750, 734), "Where are both lungs?", [(first, "the right lung")])]


@pytest.mark.parametrize(
    ("messages", "words"),
    [
        ([{"role": "user", "content": "hello"}], "exactly one image"),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "http://x.org/a.png"}}],
                }
            ],
            "only data URLs",
        ),
        (
            [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(CXR)}}]},
                {"role": "user", "content": "again"},
            ],
            "alternate user and assistant",
        ),
    ],
)
def test_chat_refusals(client: TestClient, messages: list, words: str) -> None:
    reply = client.post("/v1/chat/completions", json={"messages": messages})
    assert reply.status_code == 400
    assert words in reply.json()["error"]["message"]


def _openai_messages() -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(CXR)}},
                {"type": "text", "text": QUESTION},
            ],
        }
    ]


def test_openai_client_chat_and_stream(server: str, models) -> None:
    grounder, _ = models
    direct = grounder.ask(CXR, QUESTION)
    api = openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in api.models.list()] == ["bird-nano", "medground-icl"]
    done = api.chat.completions.create(model="bird-nano", messages=_openai_messages())
    message = done.choices[0].message
    assert message.content == direct.text
    assert done.choices[0].finish_reason == "stop"
    extension = message.model_extra["medground"]
    assert extension["boxes"] == [{"label": g.label, "box": g.box.as_list()} for g in direct.boxes]
    assert (extension["width"], extension["height"]) == (750, 734)
    chunks = list(api.chat.completions.create(model="bird-nano", messages=_openai_messages(), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == direct.text
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices[0].delta.model_extra["medground"] == extension
    with pytest.raises(openai.BadRequestError, match="only data URLs"):
        api.chat.completions.create(
            model="bird-nano",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "https://x.org/a.png"}}],
                }
            ],
        )
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model="gpt-4o", messages=_openai_messages())


def test_bare_base64_jpeg_is_accepted(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.open(CXR).convert("RGB").save(buffer, format="JPEG")
    bare = base64.b64encode(buffer.getvalue()).decode()
    assert bare.startswith("/9j/")  # looks like a path, is base64
    reply = client.post("/v1/ground", json={"image": bare, "question": QUESTION})
    assert reply.status_code == 200, reply.text
    assert (reply.json()["width"], reply.json()["height"]) == (750, 734)


def test_concurrent_requests_get_the_answers_of_sequential_ones(server: str, models) -> None:
    """The model lock: four clients at once on two images get exactly what one-at-a-time calls give."""
    grounder, _ = models
    other = SAMPLE_XRAY_2
    expected = {path: grounder.ask(path, QUESTION).text for path in (CXR, other)}
    jobs = [CXR, other] * 4

    def ask(path):
        body = json.dumps({"image": data_url(path), "question": QUESTION}).encode()
        request = urllib.request.Request(
            server + "/v1/ground", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            return path, json.loads(reply.read())["answer"]

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, jobs))
    assert answers == [(path, expected[path]) for path in jobs]


def test_host_header_allow_list(models) -> None:
    app = create_app(*models, ServeSettings(allowed_hosts=("127.0.0.1", "localhost", "::1")))
    for base in ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"):
        assert TestClient(app, base_url=base).get("/v1/models").status_code == 200, base
    reply = TestClient(app, base_url="http://rebound.example.com").get("/v1/models")
    assert reply.status_code == 400
    assert "'rebound.example.com' is not one this server answers to" in reply.json()["error"]["message"]


class _Blocking:
    """A grounder whose ask waits until released (a long model call)."""

    def __init__(self, grounder) -> None:
        self.grounder, self.entered, self.release = grounder, threading.Event(), threading.Event()

    def prompt(self, *args):
        return self.grounder.prompt(*args)

    def ask(self, image, question, box=None, history=()):
        self.entered.set()
        self.release.wait(30)
        return self.grounder.ask(image, question, box, history)


def test_busy_model_gives_503_with_retry_after(models) -> None:
    slow = _Blocking(models[0])
    app = create_app(slow, models[1], ServeSettings(max_waiting=0, wait_s=0.2))
    client = TestClient(app)
    body = {"image": data_url(CXR), "question": QUESTION}
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/v1/ground", json=body)
        assert slow.entered.wait(30)
        busy = client.post("/v1/ground", json=body)  # no waiting slot
        assert busy.status_code == 503
        assert busy.headers["retry-after"] == "1"
        assert "0 requests already waiting" in busy.json()["error"]["message"]
        slow.release.set()
        assert first.result().status_code == 200
    waiting = create_app(slow, models[1], ServeSettings(max_waiting=1, wait_s=0.2))
    slow.entered.clear()
    slow.release.clear()
    client = TestClient(waiting)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/v1/ground", json=body)
        assert slow.entered.wait(30)
        late = client.post("/v1/ground", json=body)  # waits 0.2 s for the model, then gives up
        assert late.status_code == 503
        assert "waited 0.2 s for the model" in late.json()["error"]["message"]
        slow.release.set()
        assert first.result().status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/ground", {"image": data_url(CXR)}),
        ("/v1/ground", {"image": 42, "question": QUESTION}),
        ("/v1/ground", {"image": data_url(CXR), "question": QUESTION, "box": [1, 2, 3]}),
        ("/v1/ground", {"image": data_url(CXR), "question": QUESTION, "box": [5, 5, 2, 2]}),
        ("/v1/ground", [1, 2, 3]),
        ("/v1/chat/completions", {"messages": []}),
        ("/v1/chat/completions", {"messages": [{"role": "tool", "content": "x"}]}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "audio", "x": 1}]}]}),
        ("/v1/segment", {"query": data_url(CXR), "support": [{"image": data_url(CXR), "mask": "@@"}]}),
        ("/v1/segment", {"query": data_url(CXR), "text": "lung", "threshold": 2}),
        (
            "/v1/segment",
            {
                "query": data_url(CXR),
                "support": [{"image": data_url(CXR), "mask": data_url(HC18 / "masks" / "000_HC_mask.png")}],
            },
        ),
    ],
)
def test_malformed_requests_get_a_4xx_and_the_server_keeps_serving(
    client: TestClient, path: str, body
) -> None:
    reply = client.post(path, json=body)
    assert 400 <= reply.status_code < 500, reply.text
    assert reply.json()["error"]["message"]
    assert client.get("/health").status_code == 200
