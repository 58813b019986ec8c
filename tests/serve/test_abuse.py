"""The abuse suite: the attacks of issue 22 and generated requests over every route, each against a server
in a process of its own (:mod:`medground.serve.process`), whose peak memory (VmHWM) is read from /proc.
Every attack must get a 4xx (never a 5xx or silence), memory must stay within the configured budgets, and
a normal request must still be answered in time afterwards. Loopback only; every loop is bounded."""

from __future__ import annotations

import base64
import gzip
import io
import json
import struct
import threading
import time
from collections.abc import Iterator

import httpx2
import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from medground.serve.attacks import (
    MiB,
    announce_only,
    connect,
    deflated_dicom,
    head,
    nifti_gz,
    png_url,
    read_answer,
    stream_body,
)
from medground.serve.process import ServerProcess, server_processes

from .conftest import CXR, data_url

BUDGETS = {
    "max_body_bytes": 4 * MiB,
    "max_volume_bytes": 16 * MiB,
    "max_voxels": 4 * MiB,
    "max_volumes": 2,
    "max_volume_store_bytes": 32 * MiB,
    "max_request_pixels": 8 * MiB,
    "max_inflight_bytes": 32 * MiB,
    "max_waiting": 4,
    "body_idle_s": 1.0,
    "body_timeout_s": 4.0,
}
"""Small budgets, so that every attack is cheap to refuse and memory has a tight bound to stay under."""
HEADER_TIMEOUT_S = 1.0
SLACK_MB = 400
TOKEN = "s3cret"
QUESTION = "Where are both lungs?"


def _warm(server: ServerProcess, headers: dict[str, str]) -> float:
    """One normal ground and one segment request (the model's first-call costs), then the idle peak, MiB."""
    with httpx2.Client(base_url=server.url, headers=headers, timeout=60) as client:
        assert (
            client.post("/v1/ground", json={"image": data_url(CXR), "question": QUESTION}).status_code == 200
        )
        pair = {"image": data_url(CXR), "mask": png_url(np.full((734, 750), 255, np.uint8))}
        body = {"query": data_url(CXR), "support": [pair]}
        assert client.post("/v1/segment", json=body).status_code == 200
    return server.memory_mb()["peak"]


@pytest.fixture(scope="module")
def servers() -> Iterator[list[tuple[ServerProcess, float]]]:
    """Two servers, each with its idle peak (MiB) after a warm-up: loopback without a token as
    ``medground serve`` runs it (browser guard and Host allow-list on), and one with a token."""
    open_options = {**BUDGETS, "browser_guard": True, "allowed_hosts": ["127.0.0.1", "localhost"]}
    with server_processes([open_options, {**BUDGETS, "token": TOKEN}], HEADER_TIMEOUT_S) as (opened, guarded):
        yield [(opened, _warm(opened, {})), (guarded, _warm(guarded, {"Authorization": f"Bearer {TOKEN}"}))]


@pytest.fixture(scope="module")
def open_server(servers) -> tuple[ServerProcess, float]:
    return servers[0]


@pytest.fixture(scope="module")
def token_server(servers) -> tuple[ServerProcess, float]:
    return servers[1]


def test_an_announced_oversized_body_is_answered_within_100_ms_of_its_headers(open_server, token_server):
    """Unauthenticated: 401 before the size is even looked at; authenticated: 413 from Content-Length."""
    cases = [
        (token_server[0].url, "/v1/volumes", {"Content-Type": "application/octet-stream"}, 401),
        (
            token_server[0].url,
            "/v1/ground",
            {"Authorization": f"bearer {TOKEN}", "Content-Type": "application/json"},
            413,
        ),
        (open_server[0].url, "/v1/volumes", {"Content-Type": "application/gzip"}, 413),
    ]
    for url, path, headers, expected in cases:
        answers = [announce_only(url, path, headers) for _ in range(5)]
        assert {status for status, _ in answers} == {expected}
        assert sorted(seconds for _, seconds in answers)[2] < 0.1  # the median of five


def test_parallel_unauthenticated_200_mib_posts_cost_no_memory(token_server):
    """Four clients stream 200 MiB each without the token: each gets its 401 before the body is read, and
    the server's peak stays where it was (the old middleware buffered every body first: +1.2 GB)."""
    server, idle = token_server
    results: list[tuple[int, int]] = []
    headers = {"Content-Type": "application/octet-stream"}
    threads = [
        threading.Thread(
            target=lambda: results.append(stream_body(server.url, "/v1/volumes", headers, 200 * MiB))
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [status for status, _ in results] == [401] * 4
    assert all(sent < 200 * MiB for _, sent in results)  # refused long before the end
    assert server.memory_mb()["peak"] - idle < 50


def test_an_authenticated_chunked_body_is_cut_off_at_the_limit(token_server):
    server, idle = token_server
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    status, sent = stream_body(server.url, "/v1/ground", headers, 64 * MiB)
    assert status == 413
    assert sent < 64 * MiB
    assert server.memory_mb()["peak"] - idle < 100


def _post_volume(
    server: ServerProcess, data: bytes, headers: dict[str, str] | None = None
) -> httpx2.Response:
    headers = {"Content-Type": "application/octet-stream", **(headers or {})}
    return httpx2.post(f"{server.url}/v1/volumes", content=data, headers=headers, timeout=30)


def test_a_forged_nifti_offset_is_refused_before_inflating(open_server):
    """vox_offset 1 GiB in a small .nii.gz: over the byte budget, 413 from the header (it was accepted and
    cost +2 GB); an offset inside the budget but past the header and its extensions: 400."""
    server, idle = open_server
    reply = _post_volume(server, nifti_gz(2.0**30))
    assert reply.status_code == 413
    assert "over the 16777216-byte limit" in reply.json()["error"]["message"]
    reply = _post_volume(server, nifti_gz(8.0 * MiB))
    assert reply.status_code == 400
    assert "vox_offset 8388608 is not where its header and extensions end (352 bytes)" in reply.text
    assert _post_volume(server, nifti_gz()).status_code == 200  # the same file, honest
    assert server.memory_mb()["peak"] - idle < 100


def test_a_deflated_dicom_bomb_is_refused_before_pydicom_inflates_it(open_server):
    server, idle = open_server
    bomb = deflated_dicom(128 * MiB)  # 128 kB
    start = time.perf_counter()
    reply = _post_volume(server, bomb)
    assert reply.status_code == 415
    assert "Deflated Explicit VR Little Endian" in reply.json()["error"]["message"]
    assert time.perf_counter() - start < 2  # it took 265 s of CPU before its 400
    assert server.memory_mb()["peak"] - idle < 100


def test_the_pixel_budget_counts_every_image_of_a_request_before_decoding(open_server):
    """16 supports of 4096 x 4096 in a small body (zeros compress well): 413 from the headers (it took
    21 s and +2 GB, decoding every support before the model gate)."""
    server, idle = open_server
    big = png_url(np.zeros((4096, 4096), np.uint8))
    body = {"query": big, "support": [{"image": big, "mask": big}] * 16}
    start = time.perf_counter()
    reply = httpx2.post(f"{server.url}/v1/segment", json=body, timeout=30)
    assert reply.status_code == 413
    assert "33 images hold 553648128 pixels together" in reply.json()["error"]["message"]
    assert time.perf_counter() - start < 2
    assert server.memory_mb()["peak"] - idle < 100


def test_a_huge_question_is_refused_before_the_model(open_server):
    server, _ = open_server
    body = {"image": data_url(CXR), "question": "where? " * 40_000}
    start = time.perf_counter()
    reply = httpx2.post(f"{server.url}/v1/ground", json=body, timeout=30)
    assert reply.status_code == 400
    assert "280000 characters long" in reply.json()["error"]["message"]
    assert time.perf_counter() - start < 1
    # under the character limit but over the token limit: 3000 characters of digits and symbols
    body["question"] = "1+2=" * 750
    reply = httpx2.post(f"{server.url}/v1/ground", json=body, timeout=30)
    assert reply.status_code == 400
    assert "tokens long" in reply.json()["error"]["message"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Origin": "https://evil.example", "Content-Type": "application/octet-stream"}, 403),
        ({"Origin": "null", "Content-Type": "application/octet-stream"}, 403),
        ({}, 415),  # no content type: a page's fetch(url, {method: "POST", body: blob}) sends none
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({"Content-Type": "multipart/form-data; boundary=x"}, 415),
    ],
)
def test_on_loopback_without_a_token_what_a_web_page_can_send_unasked_is_refused(
    open_server, headers, status
):
    server, _ = open_server
    with connect(server.url) as sock:
        data = nifti_gz()
        sock.sendall(head("POST", "/v1/volumes", {**headers, "Content-Length": str(len(data))}) + data)
        answer, raw = read_answer(sock)
    assert answer == status
    assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["error"]["code"] == status


def test_the_pages_own_requests_pass_the_browser_guard(open_server):
    server, _ = open_server
    same = {"Origin": server.url, "Content-Type": "application/octet-stream"}
    assert _post_volume(server, nifti_gz(), same).status_code == 200
    assert httpx2.get(f"{server.url}/v1/models", headers={"Origin": server.url}).status_code == 200


def test_half_sent_headers_and_stalled_bodies_are_cut_off(open_server):
    server, _ = open_server
    with connect(server.url) as sock:  # headers never finished: the connection is closed
        sock.sendall(b"POST /v1/ground HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        start = time.perf_counter()
        assert sock.recv(1) == b""
        assert HEADER_TIMEOUT_S - 0.2 < time.perf_counter() - start < HEADER_TIMEOUT_S + 2
    with connect(server.url) as sock:  # the same after a first request on a kept-alive connection
        sock.sendall(head("GET", "/health", {}))
        assert read_answer(sock)[0] == 200
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        start = time.perf_counter()
        assert sock.recv(1) == b""
        assert time.perf_counter() - start < HEADER_TIMEOUT_S + 2  # not the 5 s keep-alive timeout
    with connect(server.url) as sock:  # a body that stops: 408 after body_idle_s
        headers = {"Content-Type": "application/json", "Content-Length": "1000"}
        sock.sendall(head("POST", "/v1/ground", headers) + b'{"image": "')
        start = time.perf_counter()
        status, raw = read_answer(sock)
        assert status == 408
        assert BUDGETS["body_idle_s"] - 0.2 < time.perf_counter() - start < BUDGETS["body_idle_s"] + 2
        assert b'"type":"invalid_request_error"' in raw


def test_errors_are_openai_objects_bearer_is_case_insensitive_and_base64_may_wrap(token_server):
    server, _ = token_server
    with httpx2.Client(base_url=server.url, timeout=60) as client:
        for scheme in ("bearer", "BEARER", "Bearer"):
            assert client.get("/v1/models", headers={"Authorization": f"{scheme} {TOKEN}"}).status_code == 200
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for method, path, content, status in [
            ("POST", "/v1/ground", b'{"image": ', 400),  # malformed JSON
            ("POST", "/v1/ground", b"[1, 2]", 400),
            ("GET", "/v1/nothing", b"", 404),
            ("DELETE", "/v1/models", b"", 405),
            ("GET", "/v1/models", b"", 200),
        ]:
            headers = {**auth, "Content-Type": "application/json"}
            reply = client.request(method, path, content=content, headers=headers)
            assert reply.status_code == status
            if status >= 400:
                error = reply.json()["error"]
                assert set(error) == {"message", "type", "code"} and error["code"] == status
        # base64 as mail and PEM tools write it: 76-character lines
        wrapped = base64.encodebytes(CXR.read_bytes()).decode()
        reply = client.post("/v1/ground", json={"image": wrapped, "question": QUESTION}, headers=auth)
        assert reply.status_code == 200, reply.text
        client.get("/", headers=auth)
        metrics = client.get("/metrics", headers=auth).text
    for route in ('route="/v1/ground"', 'route="/v1/nothing"', 'route="/"', 'route="/v1/models"'):
        assert (route in metrics) == (route != 'route="/v1/nothing"')
    assert 'route="other",method="GET",status="404"' in metrics


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
FIELDS = st.sampled_from(["image", "question", "box", "query", "support", "messages", "volume_slice", "text"])
ROUTES = [
    ("POST", "/v1/ground"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/segment"),
    ("POST", "/v1/volumes"),
    ("GET", "/v1/volumes/{id}"),
    ("GET", "/v1/volumes/{id}/axial/0.png"),
    ("GET", "/v1/volumes/{id}/coronal/3.f32"),
    ("GET", "/v1/volumes/{id}/windows.json"),
    ("POST", "/v1/images/preview.png"),
    ("GET", "/static/cards/{id}.md"),
    ("GET", "/v1/models"),
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/"),
]


@st.composite
def _request(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(method, path, body): generated JSON with the routes' own field names, raw bytes, random images
    and NIfTI headers whose dims, bitpix and vox_offset are drawn."""
    method, path = draw(st.sampled_from(ROUTES))
    path = path.replace("{id}", draw(st.text("abcXYZ-_09%./", min_size=1, max_size=70)))
    kind = draw(st.sampled_from(["json", "fields", "bytes", "image", "nifti"]))
    if kind == "json":
        body = json.dumps(draw(JSON)).encode()
    elif kind == "fields":
        body = json.dumps(draw(st.dictionaries(FIELDS, JSON, max_size=4))).encode()
    elif kind == "bytes":
        body = draw(st.binary(max_size=2000))
    elif kind == "image":
        side = draw(st.tuples(st.integers(1, 3000), st.integers(1, 3000)))
        pixels = base64.b64encode(_png_bytes(side)).decode()
        body = json.dumps({"image": pixels, "question": draw(st.text(max_size=30)) or "x"}).encode()
    else:
        raw = bytearray(nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4)).to_bytes())
        dims = draw(st.lists(st.integers(-2, 5000), min_size=4, max_size=4))
        struct.pack_into("<4h", raw, 40, *dims)
        struct.pack_into("<h", raw, 72, draw(st.integers(-8, 256)))
        struct.pack_into("<f", raw, 108, draw(st.floats(-1e10, 1e10, allow_nan=False)))
        body = gzip.compress(bytes(raw)) if draw(st.booleans()) else bytes(raw)
    return method, path, body


def _png_bytes(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size).save(buffer, format="PNG")
    return buffer.getvalue()


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(generated=_request())
def test_generated_requests_over_every_route_get_no_5xx_and_openai_errors(open_server, generated):
    server, _ = open_server
    method, path, body = generated
    headers = {"Content-Type": "application/octet-stream" if path == "/v1/volumes" else "application/json"}
    reply = httpx2.request(method, server.url + path, content=body or None, headers=headers, timeout=60)
    assert reply.status_code < 500, (reply.status_code, reply.text[:500])
    if reply.status_code >= 400:
        error = reply.json()["error"]
        assert error["code"] == reply.status_code and error["message"]


def test_after_the_attacks_memory_is_bounded_and_a_normal_request_answers_in_time(open_server, token_server):
    """Runs last in this module: every server's peak is within its budgets + 400 MB of its idle peak."""
    largest = BUDGETS["max_volume_bytes"] + 4 * BUDGETS["max_voxels"] * 2  # raw bytes, float32 and a copy
    pixels = BUDGETS["max_request_pixels"] * 3 * 2  # RGB and one converted copy
    bound = (
        largest + BUDGETS["max_volume_store_bytes"] + BUDGETS["max_inflight_bytes"] + pixels
    ) / MiB + SLACK_MB
    for (server, idle), headers in ((open_server, {}), (token_server, {"Authorization": f"Bearer {TOKEN}"})):
        start = time.perf_counter()
        reply = httpx2.post(
            f"{server.url}/v1/ground",
            json={"image": data_url(CXR), "question": QUESTION},
            headers=headers,
            timeout=60,
        )
        assert reply.status_code == 200
        assert time.perf_counter() - start < 10
        assert server.memory_mb()["peak"] - idle < bound
