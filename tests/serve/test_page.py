"""The page's own reads, through the API (no browser): a slice's float32 values, the windows' ranges, a
TIFF previewed as PNG, the shipped model's card; with their refusals and the token."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from medground.io.nifti import load_volume
from medground.serve.app import ServeSettings, create_app

from .test_volumes import CT_NII, _marked


@pytest.fixture(scope="module")
def client(models) -> TestClient:
    return TestClient(create_app(*models))


@pytest.fixture(scope="module")
def ct(client: TestClient) -> str:
    reply = client.post("/v1/volumes", content=CT_NII.read_bytes(), params={"modality": "ct"})
    assert reply.status_code == 200, reply.text
    return reply.json()["id"]


@pytest.mark.parametrize(("plane", "index"), [("axial", 64), ("coronal", 10), ("sagittal", 127)])
def test_slice_values_are_the_canonical_voxels_in_the_png_slices_frame(client, ct, plane, index) -> None:
    reply = client.get(f"/v1/volumes/{ct}/{plane}/{index}.f32")
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/octet-stream"
    height, width = (int(v) for v in reply.headers["x-medground-shape"].split())
    values = np.frombuffer(reply.content, "<f4").reshape(height, width)
    x = load_volume(CT_NII).array  # canonical (X, Y, Z); display: image left = patient right, top = A or S
    expected = {
        "axial": x[::-1, ::-1, index].T,
        "coronal": x[::-1, index, ::-1].T,
        "sagittal": x[index, ::-1, ::-1].T,
    }[plane]
    assert np.array_equal(values, expected)
    png = np.asarray(Image.open(io.BytesIO(client.get(f"/v1/volumes/{ct}/{plane}/{index}.png").content)))
    assert png.shape == (height, width)


def test_window_ranges_are_the_presets_and_percentiles_only_when_asked(client, ct) -> None:
    ranges = client.get(f"/v1/volumes/{ct}/windows.json").json()
    assert "percentiles" not in ranges
    assert ranges["soft-tissue"] == [-160.0, 240.0] and ranges["bone"] == [
        -500.0,
        1300.0,
    ]  # 40 +/- 200, 400 +/- 900
    lo, hi = client.get(f"/v1/volumes/{ct}/windows.json", params={"percentiles": "true"}).json()[
        "percentiles"
    ]
    x = load_volume(CT_NII).array
    assert (lo, hi) == pytest.approx(tuple(np.percentile(x[x != 0].astype(np.float64), [0.5, 99.5])))


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/v1/volumes/{id}/oblique/0.f32", 400, "unknown plane"),
        ("/v1/volumes/{id}/axial/128.f32", 400, "outside 0..127"),
        ("/v1/volumes/{id}/axial/-1.f32", 400, "outside 0..127"),
        ("/v1/volumes/nothere/axial/0.f32", 404, "not held"),
        ("/v1/volumes/nothere/windows.json", 404, "not held"),
        ("/static/cards/someone-else.md", 404, "bird-nano"),
    ],
)
def test_refusals_say_what_is_wrong(client, ct, path, status, words) -> None:
    reply = client.get(path.format(id=ct))
    assert reply.status_code == status
    assert words in reply.json()["error"]["message"]


def test_the_shipped_model_card_is_served_without_a_token_and_values_need_it(models) -> None:
    client = TestClient(create_app(*models, ServeSettings(token="s3cret")))
    card = client.get("/static/cards/bird-nano.md")
    assert card.status_code == 200 and "bird-nano" in card.text and "not a clinical" in card.text
    volume = client.post("/v1/volumes", content=_marked("left"), headers={"Authorization": "Bearer s3cret"})
    assert client.get(f"/v1/volumes/{volume.json()['id']}/axial/0.f32").status_code == 401
    assert client.post("/v1/images/preview.png", json={"image": "AAAA"}).status_code == 401


def _data_url(image: Image.Image, **options) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF", **options)
    return "data:image/tiff;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_a_tiff_is_previewed_as_png_with_its_pixels(client) -> None:
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), np.uint8))
    reply = client.post("/v1/images/preview.png", json={"image": _data_url(rgb, compression="tiff_lzw")})
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(reply.content))), np.asarray(rgb))
    # 16-bit grey: stretched min..max to 8 bits (100 -> 0, 4100 -> 255, 2100 -> 127.5 -> 128)
    grey = Image.fromarray(np.array([[100, 2100, 4100]], np.uint16))
    shown = np.asarray(
        Image.open(io.BytesIO(client.post("/v1/images/preview.png", json={"image": _data_url(grey)}).content))
    )
    assert shown.tolist() == [[0, 128, 255]]


def test_a_preview_is_refused_past_the_pixel_limit_before_decoding(models) -> None:
    client = TestClient(create_app(*models, ServeSettings(max_pixels=100)))
    reply = client.post("/v1/images/preview.png", json={"image": _data_url(Image.new("L", (20, 20)))})
    assert reply.status_code == 413 and "20x20" in reply.json()["error"]["message"]
