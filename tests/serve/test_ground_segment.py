"""``segment: true`` through the API: /v1/ground and the chat completion's ``medground`` extension return
each box with its mask (PNG and COCO RLE) in pixels of the image the client sent."""

from __future__ import annotations

import base64
import io

import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools import mask as coco_mask

from medground.serve.app import create_app

from .conftest import CXR, data_url

QUESTION = "Where are both lungs?"


def _png_mask(text: str) -> np.ndarray:
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))
    assert set(np.unique(pixels)) <= {0, 255}
    return pixels == 255


def _rle_mask(rle: dict) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def _check_masked_boxes(boxes: list[dict], width: int, height: int) -> list[np.ndarray]:
    """Each box's mask: PNG and RLE the same pixels, the client's size, inside the box, not empty."""
    masks = []
    for found in boxes:
        x0, y0, x1, y1 = found["box"]
        png, rle = _png_mask(found["mask"]["mask_png"]), _rle_mask(found["mask"]["rle"])
        assert png.shape == (height, width) and found["mask"]["rle"]["size"] == [height, width]
        assert np.array_equal(png, rle)
        assert found["mask"]["area"] == int(png.sum()) > 0
        assert int(png[y0:y1, x0:x1].sum()) == int(png.sum()), "mask pixels outside the box"
        masks.append(png)
    return masks


@pytest.fixture(scope="module")
def client(models) -> TestClient:
    return TestClient(create_app(*models))


def _ground(client: TestClient, image: str, **extra: object) -> dict:
    reply = client.post("/v1/ground", json={"image": image, "question": QUESTION, **extra})
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_ground_with_segment_returns_the_librarys_masks(client: TestClient, models) -> None:
    grounder, _ = models
    body = _ground(client, data_url(CXR), segment=True)
    direct = grounder.ask(CXR, QUESTION, segment=True)  # the library call, on the file itself
    assert body["answer"] == direct.text and body["boxes"]
    assert [b["box"] for b in body["boxes"]] == [g.box.as_list() for g in direct.boxes]
    masks = _check_masked_boxes(body["boxes"], 750, 734)
    for mask, g in zip(masks, direct.boxes, strict=True):
        assert np.array_equal(mask, g.mask)  # type: ignore[attr-defined]


def test_ground_without_segment_is_unchanged(client: TestClient) -> None:
    body = _ground(client, data_url(CXR))
    assert body["boxes"] and all(set(b) == {"label", "box"} for b in body["boxes"])


def test_masks_are_in_the_pixels_of_the_image_sent(client: TestClient) -> None:
    small = Image.open(CXR).convert("RGB").resize((375, 367))
    buffer = io.BytesIO()
    small.save(buffer, format="PNG")
    body = _ground(client, base64.b64encode(buffer.getvalue()).decode("ascii"), segment=True)
    assert (body["width"], body["height"]) == (375, 367) and body["boxes"]
    _check_masked_boxes(body["boxes"], 375, 367)


class _HalfPlane:
    """A stand-in segmenter: probability 0.8 on the image's left half (x < W/2), 0.1 on the right."""

    def segment(self, query: np.ndarray, box: list[int] | None = None) -> np.ndarray:
        prob = np.full(query.shape[:2], 0.1, np.float32)
        prob[:, : query.shape[1] // 2] = 0.8
        return prob


def test_ground_segments_with_the_served_segmenter(models) -> None:
    grounder, _ = models
    body = _ground(TestClient(create_app(grounder, _HalfPlane())), data_url(CXR), segment=True)
    for found in body["boxes"]:
        x0, y0, x1, y1 = found["box"]
        expected = np.zeros((734, 750), bool)
        expected[y0:y1, x0 : max(x0, min(x1, 375))] = True  # the left half, cut to the box
        assert np.array_equal(_png_mask(found["mask"]["mask_png"]), expected)


def _messages() -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(CXR)}},
                {"type": "text", "text": QUESTION},
            ],
        }
    ]


def test_openai_client_gets_masks_when_the_request_extension_asks(server: str, client: TestClient) -> None:
    api = openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)
    asked = {"medground": {"segment": True}}
    done = api.chat.completions.create(model="bird-nano", messages=_messages(), extra_body=asked)
    extension = done.choices[0].message.model_extra["medground"]
    ground = _ground(client, data_url(CXR), segment=True)
    assert extension["boxes"] == ground["boxes"]
    _check_masked_boxes(extension["boxes"], 750, 734)
    plain = api.chat.completions.create(model="bird-nano", messages=_messages())
    assert all(set(b) == {"label", "box"} for b in plain.choices[0].message.model_extra["medground"]["boxes"])
    chunks = list(
        api.chat.completions.create(model="bird-nano", messages=_messages(), extra_body=asked, stream=True)
    )
    assert chunks[-1].choices[0].delta.model_extra["medground"]["boxes"] == extension["boxes"]
