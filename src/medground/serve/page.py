"""The web page of ``medground serve``: ``GET /`` and its static files (plain HTML/CSS/JS, no build step,
nothing fetched from elsewhere), and what only the page needs: a volume slice's voxel values (the page
windows them itself, so a window/level drag never waits on the server), a PNG of an image a browser
cannot decode (TIFF), and the cards of the models shipped with medground. The page and the cards hold
no data, so they are served without the bearer token; the page asks for the token once and sends it
with every API call.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel

from medground.io.display import AXES, CT_WINDOWS, axis_length, ct_window, mr_percentiles, slice_volume
from medground.mllm.grounder import DEFAULT_MODEL
from medground.serve.volumes import PERCENTILES, VolumeStore

__all__ = ["CARDS", "STATIC", "PUBLIC_PREFIX", "mount_page"]

STATIC = Path(__file__).with_name("static")
"""index.html, page.css and page.js (package data)."""

PUBLIC_PREFIX = "/static/"
"""Paths under it (and ``/``) are answered without the bearer token: the page's own files."""

CARDS = {"bird-nano": DEFAULT_MODEL / "TRAINING.md"}
"""Model id -> its card (markdown) for the models shipped with medground, served at
``/static/cards/{id}.md`` so the page can link the card of the model that answers."""


def _windows(store: VolumeStore, volume_id: str, percentiles: bool) -> dict[str, list[float]]:
    """Window names of a held volume -> their [lo, hi] in the volume's values: CT presets in HU (level
    -/+ width / 2) and, when ``percentiles`` (they read every voxel; computed once per volume), "percentiles":
    the non-zero 0.5/99.5 percentiles."""
    held = store.get(volume_id)
    ranges = {}
    if percentiles:
        if held.percentiles is None:
            held.percentiles = mr_percentiles(held.volume.array)
        ranges[PERCENTILES] = list(held.percentiles)
    for name in CT_WINDOWS:
        level, width = ct_window(name)
        ranges[name] = [level - width / 2, level + width / 2]
    return ranges


class PreviewRequest(BaseModel):
    """``POST /v1/images/preview.png``: an image as the API takes it (data URL or bare base64)."""

    image: str


def preview_png(image: Image.Image) -> bytes:
    """A decoded image as a PNG a browser shows: 8-bit grey or RGB as they are (same pixels), other
    modes (16-bit or float grey, palette, CMYK) to grey/RGB, 16-bit and float grey stretched min..max."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
        image = Image.fromarray(np.floor(scaled + 0.5).astype(np.uint8))
    elif image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def page_router(store: VolumeStore, max_pixels: int) -> APIRouter:
    """``GET /v1/volumes/{id}/windows.json[?percentiles=true]`` (window name -> [lo, hi]),
    ``GET /v1/volumes/{id}/{plane}/{index}.f32`` (the display slice's values: float32 little-endian,
    (height, width) row-major, in the frame of the ``.png`` slice), ``POST /v1/images/preview.png``
    (an image a browser cannot decode, TIFF, as PNG; at most ``max_pixels``, checked from its header
    before decoding) and ``GET /static/cards/{id}.md``."""
    from medground.serve.app import load_pixels, open_image  # app imports this module

    router = APIRouter()

    @router.post("/v1/images/preview.png")
    def preview(body: PreviewRequest) -> Response:
        image = load_pixels(open_image(body.image, "image", max_pixels), "image")
        return Response(preview_png(image), media_type="image/png", headers={"Cache-Control": "no-store"})

    @router.get("/v1/volumes/{volume_id}/windows.json")
    def windows(volume_id: str, percentiles: bool = False) -> JSONResponse:
        return JSONResponse(_windows(store, volume_id, percentiles), headers={"Cache-Control": "no-store"})

    @router.get("/v1/volumes/{volume_id}/{plane}/{index}.f32")
    def slice_values(volume_id: str, plane: str, index: int) -> Response:
        if plane not in AXES:
            raise HTTPException(400, f"unknown plane {plane!r}; known: {', '.join(AXES)}")
        held = store.get(volume_id)
        count = axis_length(held.volume.shape, plane)
        if not 0 <= index < count:
            raise HTTPException(400, f"{plane} slice {index} is outside 0..{count - 1} of this volume")
        values = slice_volume(held.volume.array, plane, index).astype("<f4", copy=False)
        headers = {"X-Medground-Shape": f"{values.shape[0]} {values.shape[1]}", "Cache-Control": "no-store"}
        return Response(
            np.ascontiguousarray(values).tobytes(), media_type="application/octet-stream", headers=headers
        )

    @router.get(PUBLIC_PREFIX + "cards/{model_id}.md", include_in_schema=False)
    def card(model_id: str) -> FileResponse:
        if model_id not in CARDS:
            raise HTTPException(404, f"no card shipped for model {model_id!r}; shipped: {', '.join(CARDS)}")
        return FileResponse(CARDS[model_id], media_type="text/plain; charset=utf-8")

    return router


def mount_page(app: object, store: VolumeStore, max_pixels: int) -> None:
    """Serve ``/`` (index.html), ``/static/*`` and :func:`page_router` (over ``store``, the app's uploaded
    volumes, and the app's ``max_pixels``) on ``app`` (a FastAPI app)."""
    router = page_router(store, max_pixels)

    @router.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.include_router(router)  # type: ignore[attr-defined]
    app.mount(PUBLIC_PREFIX.rstrip("/"), StaticFiles(directory=STATIC), name="static")  # type: ignore[attr-defined]
