"""Volumes for ``medground serve``: upload a NIfTI volume or a DICOM series, address it by plane and slice.

An upload (``POST /v1/volumes``, the file's bytes as the body) is read in memory by medground.io's
readers (:func:`~medground.io.nifti.load_volume_bytes`, :func:`~medground.io.dicom.load_dicom_files`),
which reorient it to canonical RAS+, and kept in a bounded in-memory :class:`VolumeStore` under a
random id; nothing is written to disk. Slices are the data engine's display slices
(:func:`~medground.io.display.slice_volume`, windowed as :func:`~medground.io.display.display_volume`
does: CT through a window preset, any other modality between its 0.5/99.5 non-zero percentiles,
computed once per volume; both are voxel-wise, so a slice is windowed alone), so every box or mask on
a slice is in the data engine's display orientation (radiological: image left = patient right),
stated with each slice as :data:`EDGES`.
"""

from __future__ import annotations

import io
import secrets
import struct
import threading
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from PIL import Image

from medground.io.dicom import DEFLATED, MemoryFile, load_dicom_files, transfer_syntax
from medground.io.display import (
    AXES,
    CT_WINDOWS,
    DEFAULT_CT_WINDOW,
    axis_length,
    ct_window,
    mr_percentiles,
    rescale_to_uint8,
    slice_spacing,
    slice_volume,
    window_ct,
)
from medground.io.errors import ReadError
from medground.io.nifti import Volume, load_volume_bytes
from medground.serve.schemas import PlaneInfo, SliceInfo, SliceRef, VolumeInfo

__all__ = ["EDGES", "PERCENTILES", "SLICE_INFO", "VolumeStore", "read_volume", "volume_router"]

PERCENTILES = "percentiles"
"""The window name of the data engine's non-CT display: the volume's 0.5/99.5 non-zero percentiles."""

EDGES: dict[str, dict[str, str]] = {
    "axial": {"left": "R", "right": "L", "top": "A", "bottom": "P"},
    "coronal": {"left": "R", "right": "L", "top": "S", "bottom": "I"},
    "sagittal": {"left": "A", "right": "P", "top": "S", "bottom": "I"},
}
"""Patient direction at each edge of a display slice, per plane (from slice_volume's frame table)."""

SLICE_INFO = "medground_slice"
"""Key in ``PIL.Image.info`` of a picture made from a volume slice: its :class:`SliceInfo`, so the boxes
and masks found on it are said to refer to that slice."""

_GZIP, _ZIP, _NIFTI1, _NIFTI2 = b"\x1f\x8b", b"PK\x03\x04", 348, 540


@dataclass
class _Held:
    volume: Volume
    default_window: str
    percentiles: tuple[float, float] | None = None  # the volume's (lo, hi), once asked for

    @property
    def nbytes(self) -> int:
        return self.volume.array.nbytes


class VolumeStore:
    """Uploaded volumes in memory under random ids, at most ``max_volumes`` and ``max_bytes`` of voxels;
    past either, the least recently used are dropped."""

    def __init__(self, max_volumes: int = 8, max_bytes: int = 2 * 1024**3) -> None:
        self.max_volumes, self.max_bytes = max_volumes, max_bytes
        self.lock = threading.Lock()
        self.held: OrderedDict[str, _Held] = OrderedDict()

    def add(self, volume: Volume, default_window: str) -> str:
        """Keep ``volume``; returns its id (128 random bits, URL-safe)."""
        volume_id = secrets.token_urlsafe(16)
        with self.lock:
            self.held[volume_id] = _Held(volume, default_window)
            self._evict()
        return volume_id

    def _evict(self) -> None:
        while len(self.held) > 1 and (
            len(self.held) > self.max_volumes or sum(h.nbytes for h in self.held.values()) > self.max_bytes
        ):
            self.held.popitem(last=False)

    def get(self, volume_id: str) -> _Held:
        with self.lock:
            if volume_id not in self.held:
                raise HTTPException(
                    404,
                    f"volume {volume_id!r} is not held: uploads are kept in memory only and the least "
                    f"recently used are dropped past {self.max_volumes} volumes or "
                    f"{self.max_bytes // 2**20} MiB; upload it again",
                )
            self.held.move_to_end(volume_id)
            return self.held[volume_id]

    def slice(self, ref: SliceRef) -> tuple[np.ndarray, SliceInfo]:
        """The display slice a reference names ((H, W) uint8) and its description; 400/404 when out of range."""
        held = self.get(ref.volume)
        window = ref.window or held.default_window
        if window != PERCENTILES and window not in CT_WINDOWS:
            raise HTTPException(400, f"unknown window {window!r}; known: {', '.join(_windows())}")
        count = axis_length(held.volume.shape, ref.plane)
        if ref.index >= count:
            raise HTTPException(
                400, f"{ref.plane} slice {ref.index} is outside 0..{count - 1} of this volume"
            )
        values = slice_volume(held.volume.array, ref.plane, ref.index)
        if window in CT_WINDOWS:
            pixels = window_ct(values, *ct_window(window))
        else:
            if held.percentiles is None:  # two racing requests compute the same numbers
                held.percentiles = mr_percentiles(held.volume.array)
            pixels = rescale_to_uint8(values, *held.percentiles)
        info = SliceInfo(
            volume=ref.volume,
            plane=ref.plane,
            index=ref.index,
            window=window,
            width=int(pixels.shape[1]),
            height=int(pixels.shape[0]),
            edges=EDGES[ref.plane],
        )
        return pixels, info

    def picture(self, ref: SliceRef) -> Image.Image:
        """The slice as a grey PIL image carrying its :class:`SliceInfo` under ``info[SLICE_INFO]``."""
        pixels, info = self.slice(ref)
        image = Image.fromarray(pixels)
        image.info[SLICE_INFO] = info
        return image

    def image_or_slice(
        self,
        image: str | None,
        ref: SliceRef | None,
        names: tuple[str, str],
        decode: Callable[[str, str], Image.Image],
    ) -> Image.Image:
        """A request's picture: ``decode(image, names[0])`` or the slice ``ref`` names; 400 unless exactly one."""
        if (image is None) == (ref is None):
            raise HTTPException(
                400,
                f"give exactly one of {names[0]} (an image) and {names[1]} (a slice of an uploaded volume)",
            )
        return self.picture(ref) if ref is not None else decode(image, names[0])


def _windows() -> list[str]:
    return [PERCENTILES, *CT_WINDOWS]


def _info(volume_id: str, held: _Held) -> VolumeInfo:
    planes = {}
    for plane in AXES:
        probe = slice_volume(np.empty(held.volume.shape, dtype=np.uint8), plane, 0)
        planes[plane] = PlaneInfo(
            count=axis_length(held.volume.shape, plane),
            width=int(probe.shape[1]),
            height=int(probe.shape[0]),
            pixel_mm=list(slice_spacing(held.volume.spacing, plane)),
            edges=EDGES[plane],
        )
    return VolumeInfo(
        id=volume_id,
        shape=list(held.volume.shape),
        spacing=list(held.volume.spacing),
        window=held.default_window,
        windows=_windows(),
        planes=planes,
    )


class _Prefix:
    """The first bytes of an upload, inflated (gzip) or sliced (raw) only as far as asked, never beyond."""

    def __init__(self, data: bytes | bytearray, name: str) -> None:
        self.name, self.gzip = name, data[:2] == _GZIP
        self.stream = zlib.decompressobj(16 + zlib.MAX_WBITS) if self.gzip else None
        self.pending, self.out = data, bytearray() if self.gzip else data

    def upto(self, n: int) -> bytes | bytearray:
        """Up to ``n`` bytes from the start (fewer only where the file ends; all held bytes, uncopied,
        when ``n`` reaches past them); 400 for a corrupt gzip."""
        while self.stream is not None and len(self.out) < n and (self.pending or self.stream.unconsumed_tail):
            try:
                piece = self.stream.decompress(self.pending, n - len(self.out))  # never more than asked
            except zlib.error as error:
                raise HTTPException(400, f"{self.name}: not a readable gzip file ({error})") from error
            self.pending = self.stream.unconsumed_tail
            self.out += piece
            if not piece and not self.pending:
                break
        return self.out if n >= len(self.out) else self.out[:n]


def _nifti_bytes(data: bytes | bytearray, name: str, max_voxels: int, max_bytes: int) -> bytes | bytearray:
    """The NIfTI file an upload holds (gunzipped in memory when gzipped), read only as far as its header
    says it goes: voxels past ``max_voxels`` or a file past ``max_bytes`` get 413 before any voxel is
    inflated, and the voxels' offset must end the header and its extensions (rounded up to 16 bytes, as
    the standard asks), so a forged offset cannot make the server inflate what no voxel needs."""
    prefix = _Prefix(data, name)
    size, voxels, bitpix, offset, order = _nifti_header(prefix.upto(_NIFTI2), name)
    if voxels > max_voxels:
        raise HTTPException(413, f"{name}: {voxels} voxels is over the {max_voxels}-voxel limit")
    total = offset + (voxels * bitpix + 7) // 8
    if total > max_bytes:
        raise HTTPException(413, f"{name}: its header says {total} bytes, over the {max_bytes}-byte limit")
    ends = _extensions_end(prefix, size, offset, order)
    if not size + 4 <= offset <= -(-ends // 16) * 16:
        raise HTTPException(
            400,
            f"{name}: corrupt NIfTI header: vox_offset {offset} is not where its header and extensions "
            f"end ({ends} bytes); rewrite the file (e.g. nibabel.save)",
        )
    body = prefix.upto(total)
    if len(body) < total:
        raise HTTPException(
            400, f"{name}: truncated: the header says {total} bytes, the file holds {len(body)}"
        )
    return body


def _extensions_end(prefix: _Prefix, size: int, offset: int, order: str) -> int:
    """Byte where a NIfTI header's extensions end (its size + 4 when it has none); each extension is
    ``esize`` (a multiple of 16, at least 16) then ``ecode``, and all of them lie before ``offset``."""
    end = size + 4
    flag = prefix.upto(end)[size:end]
    if len(flag) < 4 or flag[0] == 0:
        return end
    while end + 8 <= offset:
        head = prefix.upto(end + 8)[end:]
        if len(head) < 8:
            break
        esize = struct.unpack(order + "i", head[:4])[0]
        if esize < 16 or esize % 16 or end + esize > offset:
            break
        end += esize
    return end


def _nifti_header(head: bytes | bytearray, name: str) -> tuple[int, int, int, int, str]:
    """(header size, voxels, bits per voxel, vox_offset, byte order) of a NIfTI-1/2 header; 400 if corrupt."""
    for order in "<>":
        if len(head) >= 4 and struct.unpack(order + "i", head[:4])[0] in (_NIFTI1, _NIFTI2):
            break
    else:
        raise HTTPException(400, f"{name}: not a NIfTI file (no 348- or 540-byte header)")
    size = struct.unpack(order + "i", head[:4])[0]
    if len(head) < size:
        raise HTTPException(400, f"{name}: truncated NIfTI header ({len(head)} bytes)")
    if size == _NIFTI1:
        dims = struct.unpack(order + "8h", head[40:56])
        bitpix, offset = (
            struct.unpack(order + "h", head[72:74])[0],
            struct.unpack(order + "f", head[108:112])[0],
        )
    else:
        dims = struct.unpack(order + "8q", head[16:80])
        bitpix, offset = (
            struct.unpack(order + "h", head[14:16])[0],
            struct.unpack(order + "q", head[168:176])[0],
        )
    n = int(dims[0])
    if not 1 <= n <= 7 or any(d < 1 for d in dims[1 : n + 1]) or bitpix < 1 or not 0 <= offset < 2**62:
        raise HTTPException(
            400, f"{name}: corrupt NIfTI header (dim {list(dims)}, bitpix {bitpix}, vox_offset {offset})"
        )
    voxels = int(np.prod([int(d) for d in dims[1 : n + 1]], dtype=object))
    return size, voxels, int(bitpix), int(offset), order


def _unzip(data: bytes, name: str, max_bytes: int) -> list[MemoryFile]:
    """The files of a zip held in memory; 413 when their sizes add up past ``max_bytes`` (read bounded)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = [e for e in archive.infolist() if not e.is_dir() and not e.filename.startswith("__MACOSX")]
        declared = sum(e.file_size for e in entries)
        if declared > max_bytes:
            raise HTTPException(
                413, f"{name}: its files add up to {declared} bytes, over the {max_bytes}-byte limit"
            )
        files, read = [], 0
        for entry in entries:
            with archive.open(entry) as handle:
                content = handle.read(entry.file_size + 1)
            read += len(content)
            if len(content) > entry.file_size or read > max_bytes:
                raise HTTPException(413, f"{name}: holds more than it declares (over {max_bytes} bytes)")
            files.append(MemoryFile(f"{name}/{entry.filename}", content))
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as error:
        raise HTTPException(400, f"{name}: not a readable zip file ({error})") from error
    return files


def read_volume(data: bytes | bytearray, name: str, max_voxels: int, max_bytes: int) -> tuple[Volume, bool]:
    """(canonical RAS+ volume, True if DICOM says CT) from an upload's bytes, judged by content, never by
    ``name``: gzip (.nii.gz), NIfTI-1/2 (.nii), a zip of one DICOM series, or one DICOM file. ``max_bytes``
    bounds the upload's inflated size (a gunzipped NIfTI, a zip's files)."""
    try:
        if data[:4] == _ZIP:
            return _dicom(_unzip(data, name, max_bytes), name, max_voxels)
        if len(data) > 132 and data[128:132] == b"DICM":
            return _dicom([MemoryFile(name, bytes(data))], name, max_voxels)
        volume = load_volume_bytes(_nifti_bytes(data, name, max_voxels, max_bytes), name)
    except ReadError as error:
        raise HTTPException(400, str(error)) from error
    except HTTPException:
        raise
    except Exception as error:  # a reader's unforeseen failure on hostile content is still the upload's fault
        raise HTTPException(400, f"{name}: could not be read ({type(error).__name__}: {error})") from error
    return volume, False


def _dicom(files: list[MemoryFile], name: str, max_voxels: int) -> tuple[Volume, bool]:
    """(volume, True if its files say Modality CT) of one uploaded DICOM series. Headers are read
    first: several series, or more voxels than ``max_voxels``, are refused before any pixel is decoded,
    and without naming any tag value (the reader's own message lists series UIDs and descriptions)."""
    import pydicom

    series, modalities, voxels = set(), set(), 0
    for file in files:
        if transfer_syntax(file.data) == DEFLATED:  # pydicom would inflate it whole, unbounded
            raise HTTPException(
                415,
                f"{file.name}: Deflated Explicit VR Little Endian DICOM is not accepted (it is inflated "
                "whole before any check); re-export it uncompressed, e.g. dcmconv +te or gdcmconv --raw",
            )
        try:
            ds = pydicom.dcmread(io.BytesIO(file.data), stop_before_pixels=True)
        except Exception:
            continue  # not DICOM, or unreadable: the reader says which and why
        if "Rows" in ds and "Columns" in ds and "SeriesInstanceUID" in ds:
            series.add(str(ds.SeriesInstanceUID))
            modalities.add(str(ds.get("Modality", "")).upper())
            voxels += int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames") or 1)
    if len(series) > 1:
        raise HTTPException(400, f"{name}: holds {len(series)} image series; upload one series at a time")
    if voxels > max_voxels:
        raise HTTPException(413, f"{name}: {voxels} voxels is over the {max_voxels}-voxel limit")
    return load_dicom_files(files, name), modalities == {"CT"}


def volume_router(store: VolumeStore, max_voxels: int, max_bytes: int) -> APIRouter:
    """``POST /v1/volumes`` (upload), ``GET /v1/volumes/{id}`` (planes, sizes, edges) and
    ``GET /v1/volumes/{id}/{plane}/{index}.png`` (a display slice)."""
    router = APIRouter()

    @router.post("/v1/volumes", response_model=VolumeInfo)
    async def upload(request: Request, modality: str | None = None, name: str = "upload") -> VolumeInfo:
        data = bytearray()  # grown in place as the chunks arrive (counted by the guard): no join at the end
        async for chunk in request.stream():
            data += chunk
        if not data:
            raise HTTPException(
                400, "empty body: send the file's bytes (.nii, .nii.gz, a DICOM file or a zip)"
            )
        label = name[:80] if name.isprintable() else "upload"
        volume, ct = await run_in_threadpool(read_volume, data, label, max_voxels, max_bytes)
        window = (
            DEFAULT_CT_WINDOW
            if (modality or "").lower() == "ct" or (modality is None and ct)
            else PERCENTILES
        )
        volume_id = store.add(volume, window)
        return _info(volume_id, store.get(volume_id))

    @router.get("/v1/volumes/{volume_id}", response_model=VolumeInfo)
    def describe(volume_id: str) -> VolumeInfo:
        return _info(volume_id, store.get(volume_id))

    @router.get("/v1/volumes/{volume_id}/{plane}/{index}.png")
    def slice_png(volume_id: str, plane: str, index: int, window: str | None = None) -> Response:
        if plane not in AXES:
            raise HTTPException(400, f"unknown plane {plane!r}; known: {', '.join(AXES)}")
        if index < 0:
            raise HTTPException(400, f"slice index {index} is negative")
        ref = SliceRef.model_construct(
            volume=volume_id, plane=plane, index=index, window=window
        )  # checked above
        pixels, info = store.slice(ref)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
        edges = info.edges
        headers = {
            "X-Medground-Edges": f"left={edges['left']} right={edges['right']} top={edges['top']} bottom={edges['bottom']}",
            "X-Medground-Window": info.window,
            "Cache-Control": "no-store",
        }
        return Response(buffer.getvalue(), media_type="image/png", headers=headers)

    return router
