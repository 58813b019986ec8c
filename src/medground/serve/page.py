"""The web page of ``medground serve``: ``GET /`` and its static files (plain HTML/CSS/JS, no build step,
nothing fetched from elsewhere). The page holds no data, so it is served without the bearer token; it
asks for the token once and sends it with every API call."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["STATIC", "PUBLIC_PREFIX", "mount_page"]

STATIC = Path(__file__).with_name("static")
"""index.html, page.css and page.js (package data)."""

PUBLIC_PREFIX = "/static/"
"""Paths under it (and ``/``) are answered without the bearer token: the page's own files."""


def mount_page(app: object) -> None:
    """Serve ``/`` (index.html) and ``/static/*`` on ``app`` (a FastAPI app)."""
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.include_router(router)  # type: ignore[attr-defined]
    app.mount(PUBLIC_PREFIX.rstrip("/"), StaticFiles(directory=STATIC), name="static")  # type: ignore[attr-defined]
