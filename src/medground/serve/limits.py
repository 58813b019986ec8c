"""Limits applied before any work: one pure ASGI middleware in front of the app, and uvicorn's options.

:class:`RequestGuard` runs outermost and reads nothing of a body until the request has passed, in this
order: the Host allow-list (DNS rebinding), the ``Origin`` and content-type rules of a loopback server
without a token (``browser_guard``: any web page the user visits could otherwise post to it), the bearer
token, and an announced ``Content-Length`` over the route's limit or over the bytes all requests may hold
at once (``max_inflight_bytes``). Each refusal is answered as soon as the headers are in. A body is then
passed on as it arrives, counted (413 as soon as the count passes the limit, 503 when all bodies held
pass the in-flight budget) and timed (408 when a chunk takes longer than ``body_idle_s`` or the whole body
longer than ``body_timeout_s``). Once the body is in, a watcher waits for the client to leave and sets the
request's cancel event (:func:`cancel_event`), which model calls check. Every request is counted in
:class:`Metrics` under the route template it matched.

Headers are limited by uvicorn: :data:`UVICORN_OPTIONS` (``medground serve`` passes them) bound their size
(h11), close a connection whose request headers take longer than :data:`HEADER_TIMEOUT_S`
(:class:`HeaderTimeoutH11`) and idle keep-alive connections after a few seconds.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.routing import Match
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "HEADER_TIMEOUT_S",
    "UVICORN_OPTIONS",
    "HeaderTimeoutH11",
    "Metrics",
    "RequestGuard",
    "cancel_event",
    "error_response",
]

_KINDS = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}
_SAFELISTED = frozenset({"text/plain", "multipart/form-data", "application/x-www-form-urlencoded"})
"""Content types a web page may send cross-origin without a preflight (the Fetch standard's list)."""
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CANCEL = "medground.cancelled"


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """OpenAI's error body ``{"error": {"message", "type", "code"}}`` with ``status``."""
    kind = _KINDS.get(status, "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse(
        {"error": {"message": message, "type": kind, "code": status}}, status_code=status, headers=headers
    )


def cancel_event(scope: dict[str, Any]) -> threading.Event:
    """The request's cancel event: set once its client has gone (a fresh, unset one outside the guard)."""
    return scope.get(_CANCEL) or threading.Event()


def host_name(header: str) -> str:
    """The name in a Host header, without its port: ``[::1]:8000`` -> ``::1``, ``localhost:8000`` -> ``localhost``."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Metrics:
    """Request counts by (route, method, status) and latency sums by route, as Prometheus text."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[tuple[str, str, int], int] = defaultdict(int)
        self.seconds: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])

    def add(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one request; unknown methods are counted as "other" (labels stay bounded)."""
        method = method if method in _METHODS else "other"
        with self.lock:
            self.counts[route, method, status] += 1
            self.seconds[route][0] += seconds
            self.seconds[route][1] += 1

    def text(self) -> str:
        lines = [
            "# HELP medground_requests_total Requests answered, by route, method and status.",
            "# TYPE medground_requests_total counter",
        ]
        with self.lock:
            for (route, method, status), n in sorted(self.counts.items()):
                lines.append(
                    f'medground_requests_total{{route="{route}",method="{method}",status="{status}"}} {n}'
                )
            lines += [
                "# HELP medground_request_seconds Time to the response's start, by route.",
                "# TYPE medground_request_seconds summary",
            ]
            for route, (total, n) in sorted(self.seconds.items()):
                lines.append(f'medground_request_seconds_sum{{route="{route}"}} {total:.6f}')
                lines.append(f'medground_request_seconds_count{{route="{route}"}} {int(n)}')
        return "\n".join(lines) + "\n"


class _Refused(HTTPException):
    """Raised from the guarded ``receive``: FastAPI passes HTTPExceptions through its body parsing, so the
    app's handler answers it; the guard answers it itself when it escapes the app. The connection is
    closed after the answer (the rest of the body is never read)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message, {**(headers or {}), "Connection": "close"})


class _Body:
    """The guarded ``receive`` of one request: counts, times and budgets the body, then watches for the
    client leaving (sets ``cancelled``) and answers later ``receive`` calls with that disconnect."""

    def __init__(
        self, guard: RequestGuard, receive: Callable, limit: int, cancelled: threading.Event
    ) -> None:
        self.guard, self.upstream, self.limit, self.cancelled = guard, receive, limit, cancelled
        self.seen, self.done, self.started = 0, False, time.monotonic()
        self.gone = asyncio.Event()
        self.watcher: asyncio.Task | None = None

    async def receive(self) -> dict:
        if self.done:
            await self.gone.wait()
            return {"type": "http.disconnect"}
        left = self.guard.body_timeout_s - (time.monotonic() - self.started)
        try:
            message = await asyncio.wait_for(self.upstream(), max(0.0, min(self.guard.body_idle_s, left)))
        except TimeoutError:
            raise _Refused(408, f"the request body took longer than allowed ({self._timeouts()})") from None
        if message["type"] != "http.request":  # the client left before the body was in
            self._gone()
            return message
        self._count(len(message.get("body", b"")))
        if not message.get("more_body", False):
            self.done = True
            self.watcher = asyncio.ensure_future(self._watch())
        return message

    def _timeouts(self) -> str:
        return f"{self.guard.body_idle_s:g} s per chunk, {self.guard.body_timeout_s:g} s in all"

    def _count(self, n: int) -> None:
        self.seen += n
        self.guard.inflight += n
        if self.seen > self.limit:
            raise _Refused(413, f"request body is over the {self.limit}-byte limit")
        if self.guard.inflight > self.guard.max_inflight_bytes:
            raise _Refused(503, "server busy: too many request bodies being received", {"Retry-After": "1"})

    def _gone(self) -> None:
        self.cancelled.set()
        self.gone.set()

    async def _watch(self) -> None:
        while (await self.upstream())["type"] != "http.disconnect":
            pass
        self._gone()

    def close(self) -> None:
        """Give back the body's bytes to the in-flight budget and stop watching."""
        self.guard.inflight -= self.seen
        if self.watcher is not None:
            self.watcher.cancel()


def _flatten(routes: list[Any]) -> list[Any]:
    """Routes with a path of their own: FastAPI keeps an included router whole, as one route."""
    flat = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        flat += _flatten(inner.routes) if inner is not None else [route]
    return flat


class RequestGuard:
    """Pure ASGI middleware: every check that needs only the headers, before any body byte is read; then
    the body streamed with a running count, a time limit and the in-flight budget (see the module).

    ``limits``: body limits of particular paths (a volume upload's); ``public`` and ``public_prefixes``:
    paths, and starts of paths, answered without the token; ``routes``: the app's routes (metrics' labels).
    """

    def __init__(
        self,
        app: Any,
        *,
        metrics: Metrics,
        routes: Callable[[], list[Any]],
        max_body_bytes: int,
        limits: dict[str, int],
        max_inflight_bytes: int,
        token: str | None,
        allowed_hosts: tuple[str, ...] | None,
        browser_guard: bool,
        public: tuple[str, ...],
        public_prefixes: tuple[str, ...],
        body_idle_s: float,
        body_timeout_s: float,
    ) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes
        self.max_body_bytes, self.limits, self.max_inflight_bytes = max_body_bytes, limits, max_inflight_bytes
        self.token, self.allowed_hosts, self.browser_guard = token, allowed_hosts, browser_guard
        self.public, self.public_prefixes = public, public_prefixes
        self.body_idle_s, self.body_timeout_s = body_idle_s, body_timeout_s
        self.inflight = 0  # body bytes held by requests in progress (event-loop thread only)
        self.flat: list[Any] | None = None

    def label(self, scope: dict[str, Any]) -> str:
        """The route template ``scope`` matches (``/v1/volumes/{volume_id}``), or "other"."""
        if self.flat is None:  # the app's routes are complete once it serves
            self.flat = _flatten(self.routes())
        for route in self.flat:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                return route.path or "/"
        return "other"

    def refusal(self, scope: dict[str, Any]) -> tuple[int, str, dict[str, str] | None] | None:
        """(status, message, headers) for a request its headers alone refuse; None to go on."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self.allowed_hosts is not None and host_name(host) not in self.allowed_hosts:
            return (
                400,
                f"Host {host_name(host)!r} is not one this server answers to (DNS rebinding guard)",
                None,
            )
        guarded = self.browser_guard and self.token is None
        origin = headers.get("origin")
        if guarded and origin is not None and origin != f"{scope.get('scheme', 'http')}://{host}":
            return 403, f"Origin {origin!r} is not this server's: cross-site requests are refused", None
        path = scope["path"]
        if self.token is not None and not self._public(path) and not self._authorized(headers):
            return (
                401,
                "missing or wrong bearer token (Authorization: Bearer <token>)",
                {"WWW-Authenticate": "Bearer"},
            )
        if scope["method"] not in _BODY_METHODS:
            return None
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if guarded and (not kind or kind in _SAFELISTED):
            return (
                415,
                (
                    f"content type {kind or 'missing'!r} refused: send application/json (API calls) or "
                    "application/octet-stream (volume files), types a web page cannot send unasked"
                ),
                None,
            )
        length = headers.get("content-length", "")
        limit = self.limits.get(path, self.max_body_bytes)
        if length.isdigit() and int(length) > limit:
            return 413, f"request body of {int(length)} bytes is over the {limit}-byte limit", None
        if length.isdigit() and self.inflight + int(length) > self.max_inflight_bytes:
            return 503, "server busy: too many request bodies being received", {"Retry-After": "1"}
        return None

    def _public(self, path: str) -> bool:
        return path in self.public or any(path.startswith(p) for p in self.public_prefixes)

    def _authorized(self, headers: dict[str, str]) -> bool:
        scheme, _, given = headers.get("authorization", "").strip().partition(" ")
        expected = (self.token or "").encode()
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected)

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [0]

        def count(code: int) -> None:
            self.metrics.add(self.label(scope), scope["method"], code, time.perf_counter() - start)

        async def sent(message: dict) -> None:
            if message["type"] == "http.response.start":  # counted before the client can see the answer
                status[0] = message["status"]
                count(status[0])
            await send(message)

        try:
            refused = self.refusal(scope)
            if refused is not None:  # nothing of the body is read: the connection closes after the answer
                status_code, message, headers = refused
                close = {**(headers or {}), "Connection": "close"}
                await error_response(status_code, message, close)(scope, receive, sent)
                return
            cancelled = threading.Event()
            body = _Body(self, receive, self.limits.get(scope["path"], self.max_body_bytes), cancelled)
            try:
                await self.app({**scope, _CANCEL: cancelled}, body.receive, sent)
            except _Refused as error:
                if status[0]:
                    raise
                await error_response(error.status_code, str(error.detail), error.headers)(
                    scope, receive, sent
                )
            finally:
                body.close()
        finally:
            if not status[0]:  # no answer started here: an error escaped (the server answers 500)
                count(500)


HEADER_TIMEOUT_S = 10.0
"""Longest time a connection may take to send a request's headers (then it is closed)."""


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers are not complete
    ``header_timeout_s`` after its first byte (or after it opened): uvicorn alone waits forever."""

    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.header_timer: asyncio.TimerHandle | None = None
        self._arm()

    def _awaiting_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self.header_timer is None:
            self.header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _headers_late(self) -> None:
        self.header_timer = None
        if self._awaiting_headers() and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        waiting = self._awaiting_headers()
        super().data_received(data)
        if not self._awaiting_headers():
            self._disarm()
        elif waiting:
            self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # the keep-alive timer closes an idle connection from here
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


UVICORN_OPTIONS: dict[str, Any] = {
    "http": HeaderTimeoutH11,
    "timeout_keep_alive": 5,
    "h11_max_incomplete_event_size": 16 * 1024,
    "limit_concurrency": 64,
}
"""Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config``: headers of at most 16 KiB, sent within
:data:`HEADER_TIMEOUT_S`; idle keep-alive connections closed after 5 s; past 64 connections, 503."""
