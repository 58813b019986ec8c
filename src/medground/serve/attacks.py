"""Hostile requests, for the abuse tests (``tests/serve/test_abuse.py``) and ``bench/bench_abuse.py``:
payloads that once exhausted the server (issue 22) and raw-socket clients that send what an HTTP library
will not (a body announced and never sent, a body streamed until refused, headers left unfinished).
Loopback only; every loop here is bounded by a byte count or a timeout.
"""

from __future__ import annotations

import base64
import gzip
import io
import select
import socket
import struct
import time
import zlib
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

__all__ = [
    "MiB",
    "announce_only",
    "connect",
    "deflated_dicom",
    "head",
    "nifti_gz",
    "png_url",
    "read_answer",
    "stream_body",
]

MiB = 1024 * 1024


def connect(url: str, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to the server at ``url`` (``http://127.0.0.1:PORT``)."""
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=timeout)


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    """An HTTP/1.1 request head (Host 127.0.0.1) with ``headers``."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_answer(sock: socket.socket) -> tuple[int, bytes]:
    """(status, raw answer) read until the server closes or a whole JSON body has arrived (0: none)."""
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        try:
            piece = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not piece:
            break
        data += piece
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1") else 0
    return status, data


def announce_only(url: str, path: str, headers: dict[str, str], length: int = 200 * MiB) -> tuple[int, float]:
    """Announce a ``length``-byte body and send none of it: (status, seconds from the last header byte
    to the whole answer)."""
    with connect(url) as sock:
        sock.sendall(head("POST", path, {**headers, "Content-Length": str(length)}))
        start = time.perf_counter()
        status, _ = read_answer(sock)
        return status, time.perf_counter() - start


def stream_body(url: str, path: str, headers: dict[str, str], total: int) -> tuple[int, int]:
    """Stream a chunked body of up to ``total`` zero bytes in 1 MiB chunks until the server answers or
    closes: (status, bytes sent)."""
    chunk = b"%x\r\n" % MiB + b"\0" * MiB + b"\r\n"
    sent = 0
    with connect(url) as sock:
        sock.sendall(head("POST", path, {**headers, "Transfer-Encoding": "chunked"}))
        try:
            while sent < total and not select.select([sock], [], [], 0)[0]:  # stop once it answers
                sock.sendall(chunk)
                sent += MiB
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        status, _ = read_answer(sock)
    return status, sent


def png_url(pixels: np.ndarray) -> str:
    """A PNG data URL of ``pixels`` ((H, W) or (H, W, 3) uint8)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def nifti_gz(offset: float | None = None, shape: tuple[int, ...] = (4, 4, 4)) -> bytes:
    """A gzipped NIfTI-1 volume of zeros; ``offset``: a forged vox_offset written into its header."""
    import nibabel as nib

    raw = bytearray(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)).to_bytes())
    if offset is not None:
        struct.pack_into("<f", raw, 108, offset)
    return gzip.compress(bytes(raw))


def deflated_dicom(inflated: int) -> bytes:
    """A DICOM Part-10 file whose dataset is Deflated Explicit VR Little Endian: ``inflated`` zero bytes
    (a thousandth of that once deflated)."""
    syntax = b"1.2.840.10008.1.2.1.99\0"
    element = struct.pack("<HH2sH", 0x0002, 0x0010, b"UI", len(syntax)) + syntax
    length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(element))
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = b"".join(packer.compress(b"\0" * MiB) for _ in range(inflated // MiB)) + packer.flush()
    return b"\0" * 128 + b"DICM" + length + element + body
