"""Proxy mode against a fake upstream that behaves like vLLM serving Qwen2.5-VL: it decodes the image,
resizes it as Qwen's processor does (smart_resize written here from Qwen's published definition, not
imported from medground), finds the bright object in the resized input and answers its box in that
frame. Boxes must come back in the client's pixels and the referred box must go up in the resized frame."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import socket

import numpy as np
import openai
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient
from PIL import Image

from medground.serve.app import create_app
from medground.serve.proxy import UpstreamGrounder

from .conftest import running

WIDTH, HEIGHT = 1000, 700
OBJECT = (200, 100, 500, 400)  # x0, y0, x1, y1 (x1, y1 exclusive) of the bright square, client pixels
MIN_PIXELS, MAX_PIXELS = (
    4 * 28 * 28,
    200 * 28 * 28,
)  # small enough that the upstream frame is not the client's


def qwen_smart_resize(
    height: int, width: int, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """Qwen2-VL's ``smart_resize`` as published in qwen-vl-utils (``vision_process.py``)."""

    def round_by_factor(n: float) -> int:
        return round(n / factor) * factor

    def ceil_by_factor(n: float) -> int:
        return math.ceil(n / factor) * factor

    def floor_by_factor(n: float) -> int:
        return math.floor(n / factor) * factor

    h_bar = max(factor, round_by_factor(height))
    w_bar = max(factor, round_by_factor(width))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = floor_by_factor(height / beta)
        w_bar = floor_by_factor(width / beta)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = ceil_by_factor(height * beta)
        w_bar = ceil_by_factor(width * beta)
    return h_bar, w_bar


RESIZED_H, RESIZED_W = qwen_smart_resize(HEIGHT, WIDTH, 28, MIN_PIXELS, MAX_PIXELS)


def _scan() -> Image.Image:
    pixels = np.full((HEIGHT, WIDTH), 30, dtype=np.uint8)
    x0, y0, x1, y1 = OBJECT
    pixels[y0:y1, x0:x1] = 220
    return Image.fromarray(pixels)


def _data_url(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def fake_vllm(seen: list[dict]) -> FastAPI:
    """An OpenAI chat server answering like a Qwen2.5-VL fine-tune: the bright object's box in pixels of
    the resized input, as ``{"bbox_2d": [...], "label": "lesion"}``; streams it in several pieces."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        seen.append(body)
        image = next(
            part["image_url"]["url"]
            for message in body["messages"]
            if isinstance(message["content"], list)
            for part in message["content"]
            if part["type"] == "image_url"
        )
        picture = Image.open(io.BytesIO(base64.b64decode(image.split(",", 1)[1]))).convert("L")
        h, w = qwen_smart_resize(picture.height, picture.width, 28, MIN_PIXELS, MAX_PIXELS)
        resized = np.asarray(picture.resize((w, h), Image.Resampling.BICUBIC))
        rows, cols = np.nonzero(resized > 125)
        found = [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]
        answer = f"The lesion is here: {json.dumps({'bbox_2d': found, 'label': 'lesion'})}<|im_end|>"
        if (
            body["model"] == "my-qwen2"
        ):  # Qwen2-VL: tags, box edges round(1000 e / size) (Qwen's process_bbox)
            rows, cols = np.nonzero(np.asarray(picture) > 125)
            x0, y0 = round(cols.min() * 1000 / picture.width), round(rows.min() * 1000 / picture.height)
            x1, y1 = (
                round((cols.max() + 1) * 1000 / picture.width),
                round((rows.max() + 1) * 1000 / picture.height),
            )
            answer = (
                "<|object_ref_start|>lesion<|object_ref_end|>"
                f"<|box_start|>({x0},{y0}),({x1},{y1})<|box_end|><|im_end|>"
            )
        if not body.get("stream"):
            message = {"role": "assistant", "content": answer}
            return JSONResponse(
                {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": message}]}
            )

        def events():
            for piece in re.findall(r"\S*\s*", answer):
                if piece:
                    delta = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                    yield f"data: {json.dumps(delta)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@pytest.fixture(scope="module")
def upstream():
    seen: list[dict] = []
    with running(fake_vllm(seen)) as url:
        yield url + "/v1", seen


@pytest.fixture(scope="module")
def proxy(upstream, models) -> TestClient:
    grounder = UpstreamGrounder(upstream[0], "my-qwen25", "qwen2.5-vl", MIN_PIXELS, MAX_PIXELS)
    return TestClient(create_app(grounder, models[1], model_ids=("my-qwen25", "medground-icl")))


def _close(found: list[int], truth: tuple[int, ...]) -> bool:
    """Within one resized pixel, in client pixels (the upstream frame is coarser than the client's)."""
    step = math.ceil(max(WIDTH / RESIZED_W, HEIGHT / RESIZED_H)) + 1
    return all(abs(a - b) <= step for a, b in zip(found, truth, strict=True))


def test_the_frame_is_really_different() -> None:
    assert (RESIZED_W, RESIZED_H) == (448, 308)  # by hand: beta = sqrt(700000 / 156800) = 2.113


def test_ground_box_goes_up_in_the_resized_frame_and_comes_back_in_client_pixels(proxy, upstream) -> None:
    _, seen = upstream
    seen.clear()
    refer = [600, 350, 900, 650]
    reply = proxy.post(
        "/v1/ground",
        json={
            "image": _data_url(_scan()),
            "question": "What is at {box}? Where is the lesion?",
            "box": refer,
        },
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["model"] == "my-qwen25"
    assert (body["width"], body["height"]) == (WIDTH, HEIGHT)
    [lesion] = body["boxes"]
    assert lesion["label"] == "lesion"
    assert _close(lesion["box"], OBJECT), (lesion["box"], OBJECT)
    [request] = seen
    sx, sy = RESIZED_W / WIDTH, RESIZED_H / HEIGHT
    expected = [round(refer[0] * sx), round(refer[1] * sy), round(refer[2] * sx), round(refer[3] * sy)]
    assert expected == [269, 154, 403, 286]  # (600, 350, 900, 650) * (0.448, 0.44)
    user = request["messages"][-1]["content"]
    text = next(p["text"] for p in user if p["type"] == "text")
    assert text == f"What is at {json.dumps({'bbox_2d': expected})}? Where is the lesion?"
    assert request["model"] == "my-qwen25"
    assert request["temperature"] == 0 and request["skip_special_tokens"] is False
    assert request["messages"][0]["role"] == "system"
    image = next(p["image_url"]["url"] for p in user if p["type"] == "image_url")
    sent = np.asarray(Image.open(io.BytesIO(base64.b64decode(image.split(",", 1)[1]))))
    assert np.array_equal(sent, np.stack([np.asarray(_scan())] * 3, axis=-1))  # the client's pixels, as RGB


def test_chat_with_history_and_stream_through_the_proxy(proxy, upstream) -> None:
    _, seen = upstream
    seen.clear()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": _data_url(_scan())}},
                {"type": "text", "text": "Describe it."},
            ],
        },
        {"role": "assistant", "content": "A square."},
        {"role": "user", "content": [{"type": "text", "text": "Where is the lesion?"}]},
    ]
    whole = proxy.post("/v1/chat/completions", json={"model": "my-qwen25", "messages": messages}).json()
    message = whole["choices"][0]["message"]
    assert re.fullmatch(
        r'The lesion is here: \{"bbox_2d": \[\d+, \d+, \d+, \d+\], "label": "lesion"\}', message["content"]
    )
    [lesion] = message["medground"]["boxes"]
    assert _close(lesion["box"], OBJECT)
    roles = [
        (m["role"], [p["type"] for p in m["content"]] if isinstance(m["content"], list) else "text")
        for m in seen[0]["messages"]
    ]
    assert roles == [
        ("system", "text"),
        ("user", ["image_url", "text"]),
        ("assistant", "text"),
        ("user", ["text"]),
    ]
    streamed = proxy.post(
        "/v1/chat/completions", json={"model": "my-qwen25", "messages": messages, "stream": True}
    )
    assert streamed.status_code == 200
    events = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
    content = [e["choices"][0]["delta"].get("content") for e in events]
    content = [c for c in content if c]
    assert len(content) > 3
    assert "".join(content) == message["content"]
    assert events[-1]["choices"][0]["delta"]["medground"] == message["medground"]
    assert seen[-1]["stream"] is True


def test_the_openai_client_works_through_the_proxy(upstream, models) -> None:
    grounder = UpstreamGrounder(upstream[0], "my-qwen25", "qwen2.5-vl", MIN_PIXELS, MAX_PIXELS)
    with running(create_app(grounder, models[1], model_ids=("my-qwen25", "medground-icl"))) as url:
        api = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        assert [m.id for m in api.models.list()] == ["my-qwen25", "medground-icl"]
        content = [
            {"type": "image_url", "image_url": {"url": _data_url(_scan())}},
            {"type": "text", "text": "Where is the lesion?"},
        ]
        reply = api.chat.completions.create(
            model="my-qwen25", messages=[{"role": "user", "content": content}]
        )
        [lesion] = reply.choices[0].message.model_extra["medground"]["boxes"]
        assert _close(lesion["box"], OBJECT)


def test_an_unreachable_upstream_is_a_502_and_bad_settings_are_refused(models) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    grounder = UpstreamGrounder(f"http://127.0.0.1:{port}/v1", "m", "qwen2-vl", timeout_s=5)
    client = TestClient(create_app(grounder, models[1]))
    reply = client.post("/v1/ground", json={"image": _data_url(_scan()), "question": "Where?"})
    assert reply.status_code == 502
    assert f"upstream http://127.0.0.1:{port}/v1 unreachable" in reply.json()["error"]["message"]
    assert client.get("/health").status_code == 200
    with pytest.raises(ValueError, match="is not one of qwen2-vl, qwen2.5-vl, qwen3-vl"):
        UpstreamGrounder("http://127.0.0.1:1/v1", "m", "qwen9-vl")
    with pytest.raises(ValueError, match="not an http"):
        UpstreamGrounder("127.0.0.1:1", "m", "qwen2-vl")


def test_serve_cli_proxy_mode(upstream, monkeypatch) -> None:
    """``medground serve --upstream URL --upstream-model NAME ...`` builds the app in front of that server."""
    import uvicorn
    from typer.testing import CliRunner

    from medground.cli import app as cli

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda application, **options: served.update(app=application))
    flags = ["--upstream", upstream[0], "--upstream-model", "my-qwen25", "--upstream-family", "qwen2.5-vl"]
    pixels = ["--upstream-min-pixels", str(MIN_PIXELS), "--upstream-max-pixels", str(MAX_PIXELS)]
    result = CliRunner().invoke(cli, ["serve", *flags, *pixels])
    assert result.exit_code == 0, result.output
    client = TestClient(served["app"], base_url="http://127.0.0.1:8000")  # the loopback Host allow-list
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["my-qwen25", "medground-icl"]
    reply = client.post("/v1/ground", json={"image": _data_url(_scan()), "question": "Where is the lesion?"})
    assert _close(reply.json()["boxes"][0]["box"], OBJECT)
    alone = CliRunner().invoke(cli, ["serve", "--upstream", upstream[0]])
    assert alone.exit_code == 2 and "--upstream and --upstream-model go together" in alone.output
    bad = CliRunner().invoke(cli, ["serve", *flags[:4], "--upstream-family", "qwen9-vl"])
    assert bad.exit_code == 2 and "'qwen9-vl' is not one of qwen2-vl, qwen2.5-vl, qwen3-vl" in bad.output


def test_qwen2_vl_upstream_boxes_are_tags_on_the_1000_scale(upstream, models) -> None:
    """Qwen2-VL's box text is special tokens with edges on the [0, 1000] scale of the image, whatever the resize."""
    _, seen = upstream
    seen.clear()
    grounder = UpstreamGrounder(upstream[0], "my-qwen2", "qwen2-vl", MIN_PIXELS, MAX_PIXELS)
    client = TestClient(create_app(grounder, models[1], model_ids=("my-qwen2", "medground-icl")))
    body = {"image": _data_url(_scan()), "question": "What is at {box}?", "box": [600, 350, 900, 650]}
    reply = client.post("/v1/ground", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["boxes"] == [{"label": "lesion", "box": list(OBJECT)}]  # 1000 px wide: exact
    text = next(p["text"] for p in seen[0]["messages"][-1]["content"] if p["type"] == "text")
    # edges: x 600 -> 600, 900 -> 900; y 350 * 1000 / 700 = 500, 650 * 1000 / 700 = 928.6 -> 929
    assert text == "What is at <|box_start|>(600,500),(900,929)<|box_end|>?"
    assert seen[0]["skip_special_tokens"] is False
