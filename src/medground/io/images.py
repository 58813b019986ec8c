"""2D image and mask files: PNG, JPEG, BMP, TIFF in; deterministic PNG out.

Frames: arrays are row-major ``(H, W)`` or ``(H, W, C)``, row 0 at the top of the picture, as stored.
No EXIF rotation is applied (a mask file beside the image has no EXIF, so pairs stay aligned).

Channel rule of :func:`read_image` (decided by the file's pixel mode, never by its values):
grey modes (1, L, LA, I;16, I, F) give ``(H, W)``; colour modes (RGB, RGBA, P, PA, CMYK, YCbCr...) give
``(H, W, 3)``, even when the three channels happen to be equal. Alpha is dropped, not composited.

Masks: :func:`read_mask` reads 2D mask images; :func:`read_mask_file` reads any mask file that is scored
or drawn (images, 2D/3D NIfTI, ``.npy``) into a :class:`MaskFile` whose frame says how to compare it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from medground.io.atomic import atomic_write_bytes
from medground.io.display import slice_spacing, slice_volume
from medground.io.errors import ReadError, require_file
from medground.io.nifti import _integer_labels, _read_data, canonical_volume

__all__ = [
    "IMAGE_SUFFIXES",
    "MASK_FILE_SUFFIXES",
    "MaskFile",
    "StoredImage",
    "check_png_stream",
    "copy_image",
    "encode_mask_png",
    "encode_png",
    "image_array",
    "image_size",
    "read_image",
    "read_image_as_stored",
    "read_mask",
    "read_mask_file",
    "strip_image_metadata",
    "to_uint8_minmax",
    "write_mask_png",
    "write_png",
]

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""File suffixes (lower case) the image readers accept."""

_GREY_MODES = {"1", "L", "LA", "La", "I", "F"}
_WIDE_GREY_PREFIX = "I;16"


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ReadError(
            path,
            f"unsupported image suffix {path.suffix or '(none)'!r}; supported: "
            f"{', '.join(IMAGE_SUFFIXES)}. NIfTI volumes: medground.io.load_volume; "
            "DICOM: medground.io.load_dicom_series",
        )


@contextlib.contextmanager
def _open(path: str | Path, *, decode: bool) -> Iterator[Image.Image]:
    """Open an image file (closed on exit); with ``decode`` read every pixel so corruption surfaces here."""
    p = require_file(path)
    _check_suffix(p)
    try:
        image = Image.open(p)
    except Image.DecompressionBombError as exc:
        raise ReadError(p, f"image is too large to decode safely ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        raise ReadError(
            p,
            f"not a readable image: the content is not {p.suffix.lstrip('.').upper()} or any "
            "format Pillow knows (wrong suffix, or not an image at all?)",
        ) from exc
    except OSError as exc:
        raise ReadError(p, f"cannot open file ({exc})") from exc
    with image:
        _check_frames_and_decode(p, image, decode=decode)
        yield image


def _check_frames_and_decode(p: Path, image: Image.Image, *, decode: bool) -> None:
    if getattr(image, "n_frames", 1) > 1:
        raise ReadError(
            p,
            f"has {image.n_frames} frames/pages; medground reads single-frame images, "
            "save the frame you want as its own file",
        )
    if decode:
        _decode(p, image)


def _decode(p: Path, image: Image.Image) -> None:
    """Decode every pixel so that corruption surfaces here, as a ReadError."""
    try:
        image.load()
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, zlib.error... for bad data
        raise ReadError(
            p,
            f"file is truncated or corrupt, pixel data could not be decoded "
            f"({type(exc).__name__}: {exc}); re-export or re-download it",
        ) from exc


def to_uint8_minmax(array: np.ndarray) -> np.ndarray:
    """Linear min-max rescale to uint8: min -> 0, max -> 255, round half up; a constant array -> zeros.

    ``array`` is any real array without NaN/inf; returns uint8 of the same shape.
    """
    values = np.asarray(array, dtype=np.float64)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = np.floor((values - lo) * 255.0 / (hi - lo) + 0.5)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _wide_grey_to_uint8(path: Path, image: Image.Image) -> np.ndarray:
    values = np.asarray(image)
    if values.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise ReadError(path, f"float image holds {bad} NaN/inf pixels; expected finite values")
    return to_uint8_minmax(values)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as display-ready uint8: ``(H, W)`` for grey files, ``(H, W, 3)`` RGB for colour files.

    8-bit grey is returned as stored. 16-bit, 32-bit and float grey are min-max rescaled
    (:func:`to_uint8_minmax`: the file's min -> 0, max -> 255; constant image -> zeros). Palette files
    become RGB through their palette; alpha channels (RGBA, LA, PA) are dropped. 1-bit files give 0/255.
    Raises ReadError for a missing, unsupported, truncated or corrupt file.
    """
    p = Path(path)
    with _open(p, decode=True) as image:
        return _image_array(p, image)


class StoredImage:
    """An 8-bit grey or RGB PNG file checked whole (:func:`check_png_stream`) but not yet decoded.

    The data engine copies such files byte for byte, so it needs their size and proof that they are
    intact, not their pixels: ``shape`` comes from the header, and ``np.asarray(stored)`` decodes the
    pixels (with :func:`read_image`) on first use only, e.g. when a build resizes the image.
    """

    dtype = np.dtype(np.uint8)

    def __init__(self, path: Path, width: int, height: int, channels: int) -> None:
        self.path = path
        self.shape = (height, width) if channels == 1 else (height, width, channels)
        self._pixels: np.ndarray | None = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if self._pixels is None:
            self._pixels = read_image(self.path)
        return self._pixels if dtype is None else self._pixels.astype(dtype)


def read_image_as_stored(path: str | Path) -> tuple[np.ndarray | StoredImage, bool]:
    """:func:`read_image`, plus whether the result holds the file's pixels exactly (8-bit L or RGB), so
    that the file itself can be copied instead of encoding the array again.

    Non-interlaced 8-bit grey/RGB PNGs come back as a :class:`StoredImage`: every chunk's CRC is
    checked and the pixel stream is inflated to its exact expected length (so a truncated or corrupt
    file is refused here, as a decode would), but the pixels are not unfiltered into an array.
    """
    p = Path(path)
    with _open(p, decode=False) as image:
        if image.format == "PNG" and image.mode in ("L", "RGB") and not image.info.get("interlace"):
            check_png_stream(p)
            return StoredImage(p, image.width, image.height, 1 if image.mode == "L" else 3), True
        _decode(p, image)
        return _image_array(p, image), image.mode in ("L", "RGB")


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel


def check_png_stream(path: str | Path) -> None:
    """Raise ReadError unless the PNG at ``path`` is whole: a signature, chunks with matching CRCs up
    to IEND, and IDAT data that inflates to exactly the size its header implies (non-interlaced)."""
    p = Path(path)
    data = p.read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        raise ReadError(p, "not a PNG file (no PNG signature)")
    pos, idat, header = len(_PNG_SIGNATURE), [], None
    while True:
        if pos + 12 > len(data):
            raise ReadError(
                p, "file is truncated: it ends before the PNG end chunk (IEND); re-export or re-download it"
            )
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 8 + length
        if end + 4 > len(data):
            raise ReadError(
                p, f"file is truncated inside a {kind.decode('latin-1')} chunk; re-export or re-download it"
            )
        if zlib.crc32(data[pos + 4 : end]) != struct.unpack(">I", data[end : end + 4])[0]:
            raise ReadError(
                p, f"file is corrupt: the CRC of a {kind.decode('latin-1')} chunk does not match its data"
            )
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", data[pos + 8 : end])
        elif kind == b"IDAT":
            idat.append(data[pos + 8 : end])
        elif kind == b"IEND":
            break
        pos = end + 4
    if header is None or header[6] != 0:
        raise ReadError(
            p, "PNG without a header or interlaced: check_png_stream handles non-interlaced PNGs only"
        )
    width, height, depth, colour = header[:4]
    expected = height * (1 + (width * _PNG_CHANNELS.get(colour, 1) * depth + 7) // 8)
    inflater, inflated = zlib.decompressobj(), 0
    try:
        for part in idat:  # inflated in pieces of at most 1 MiB: memory stays small for huge images
            while part:
                inflated += len(inflater.decompress(part, 1 << 20))
                part = inflater.unconsumed_tail
        inflated += len(inflater.flush())
    except zlib.error as exc:
        raise ReadError(
            p, f"file is corrupt: the pixel data does not decompress ({exc}); re-export it"
        ) from exc
    if inflated != expected:
        raise ReadError(
            p, f"file is corrupt: its pixel data holds {inflated} bytes, the header implies {expected}"
        )


def _image_array(p: Path, image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode.startswith(_WIDE_GREY_PREFIX) or mode in {"I", "F"}:
        return _wide_grey_to_uint8(p, image)
    if mode in ("L", "RGB"):  # already display-ready: convert() would only copy the pixels once more
        return np.asarray(image, dtype=np.uint8)
    if mode in _GREY_MODES:
        return np.asarray(image.convert("L"), dtype=np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _mask_from_colour(path: Path, image: Image.Image) -> np.ndarray:
    rgb = np.asarray(image.convert("RGB"))
    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
        colours = np.unique(rgb.reshape(-1, 3), axis=0)
        example = ", ".join(str(tuple(int(v) for v in c)) for c in colours[:4])
        raise ReadError(
            path,
            f"colour mask with differing R, G, B channels ({len(colours)} distinct colours, "
            f"e.g. {example}); expected a single-channel label map. Convert it: map each "
            "colour to one integer label and save it as a grey (mode L or I;16) PNG",
        )
    return np.ascontiguousarray(rgb[..., 0])


def _mask_from_float(path: Path, image: Image.Image) -> np.ndarray:
    values = np.asarray(image)
    if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
        raise ReadError(path, "float mask holds non-integer or NaN values; expected integer labels")
    if values.size and (values.min() < np.iinfo(np.int32).min or values.max() > np.iinfo(np.int32).max):
        raise ReadError(path, "float mask values do not fit in int32")
    return values.astype(np.int32)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a label mask ``(H, W)`` with the integer values as stored in the file.

    dtype: uint8 for 8-bit files (L, P, and 1-bit files which give 0/1), uint16 for 16-bit grey
    (e.g. instance-id maps), int32 for 32-bit integer or integer-valued float files. Palette PNGs give
    their palette indices, not colours. LA/PA: the alpha channel is ignored. RGB/RGBA files whose R, G, B
    channels are equal give that channel; differing channels raise ReadError (convert to a label map).
    """
    p = Path(path)
    with _open(p, decode=True) as image:
        return _mask_array(p, image)


MASK_FILE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".npy", *IMAGE_SUFFIXES)
"""File suffixes (lower case) :func:`read_mask_file` accepts."""

_NIFTI_SUFFIXES = (".nii.gz", ".nii")
_PLANE_OF_SINGLE_AXIS = ((2, "axial"), (1, "coronal"), (0, "sagittal"))  # canonical axis of length 1 -> plane


@dataclass(frozen=True, eq=False)
class MaskFile:
    """A label mask read for comparison with another one, in a frame both sides of a pair share.

    Fields:
        array: integer labels as stored (never binarised). 2D files: ``(H, W)``, row 0 at the top; a 2D
            NIfTI (one canonical axis of length 1) is its display slice (:mod:`medground.io.display`,
            radiological, the frame ``medground build`` and ``segment`` write PNGs in), so it lines up
            with a PNG of the same slice. 3D NIfTI: canonical RAS+ ``(X, Y, Z)``. ``.npy``: as stored.
        spacing: mm per array axis from a NIfTI header (display slice: ``(row_mm, col_mm)``), else None.
        affine: 4x4 canonical voxel -> RAS+ mm of a NIfTI file (the whole volume's, also for a 2D
            slice), else None.
        frame: ``"display"`` (2D NIfTI slice), ``"ras"`` (3D NIfTI) or ``"stored"`` (image files, .npy).
        path: the file.
    """

    array: np.ndarray
    spacing: tuple[float, ...] | None
    affine: np.ndarray | None
    frame: str
    path: Path


def read_mask_file(path: str | Path) -> MaskFile:
    """Read any mask file medground scores: 2D images (as :func:`read_mask`: alpha ignored, label values
    as stored), NIfTI (2D or 3D, integer labels) and ``.npy`` (an integer or bool 2D/3D array).

    Raises ReadError naming the file for an unknown suffix, an unreadable file, non-integer labels
    or a shape that is neither 2D nor 3D.
    """
    p = require_file(path)
    name = p.name.lower()
    if name.endswith(_NIFTI_SUFFIXES):
        return _read_nifti_mask(p)
    if name.endswith(".npy"):
        return _read_npy_mask(p)
    if not name.endswith(IMAGE_SUFFIXES):
        raise ReadError(p, f"unknown mask format; expected one of {', '.join(MASK_FILE_SUFFIXES)}")
    return MaskFile(read_mask(p), None, None, "stored", p)


def _read_npy_mask(p: Path) -> MaskFile:
    try:
        array = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ReadError(p, f"not a readable .npy array ({type(exc).__name__}: {exc})") from exc
    if array.ndim not in (2, 3):
        raise ReadError(p, f"mask array has shape {array.shape}; expected 2D (H, W) or 3D")
    if array.dtype.kind not in "iub":
        raise ReadError(p, f"mask array has dtype {array.dtype}; expected integer or bool labels")
    return MaskFile(array.astype(np.int64), None, None, "stored", p)


def _read_nifti_mask(p: Path) -> MaskFile:
    import nibabel as nib

    try:
        image = nib.load(p)
    except Exception as exc:  # ImageFileError, EOFError, gzip/zlib and header errors
        raise ReadError(p, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    shape = tuple(int(n) for n in image.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise ReadError(p, f"mask volume has shape {tuple(image.shape)}; expected 2D or 3D labels")
    array = _integer_labels(p, _read_data(p, image.dataobj, None).reshape(shape))
    volume = canonical_volume(array.reshape(shape + (1,) * (3 - len(shape))), image.affine, p)
    planes = [plane for axis, plane in _PLANE_OF_SINGLE_AXIS if volume.shape[axis] == 1]
    if len(shape) == 3 and not planes:
        return MaskFile(volume.array, volume.spacing, volume.affine, "ras", p)
    plane = planes[0]
    display = slice_volume(volume.array, plane, 0)
    return MaskFile(display, slice_spacing(volume.spacing, plane), volume.affine, "display", p)


def image_array(image: Image.Image, where: str | Path) -> np.ndarray:
    """A decoded image -> display-ready uint8 by the rules of :func:`read_image` (``(H, W)`` grey,
    ``(H, W, 3)`` RGB; wide grey min-max rescaled, palettes through their colours, alpha dropped): for
    images that arrive in memory, such as the server's uploads. ``where`` names it in a :class:`ReadError`."""
    return _image_array(Path(where), image)


def mask_array(image: Image.Image, where: str | Path) -> np.ndarray:
    """A decoded mask image -> ``(H, W)`` integer labels by the rules of :func:`read_mask` (alpha ignored,
    palette indices, differing colour channels refused): for masks that arrive in memory, such as the
    server's uploads. ``where`` names the mask in a :class:`ReadError`."""
    return _mask_array(Path(where), image)


def _mask_array(p: Path, image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode == "1":
        return np.asarray(image, dtype=np.uint8)
    if mode in {"L", "P"}:
        return np.array(image, dtype=np.uint8)
    if mode in {"LA", "La", "PA"}:
        return np.array(image.getchannel(0), dtype=np.uint8)
    if mode.startswith(_WIDE_GREY_PREFIX):
        return np.asarray(image).astype(np.uint16)
    if mode == "I":
        return np.asarray(image).astype(np.int32)
    if mode == "F":
        return _mask_from_float(p, image)
    return _mask_from_colour(p, image)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` in pixels from the file header only (fast; a truncated body is not detected)."""
    with _open(path, decode=False) as image:
        width, height = image.size
    return int(width), int(height)


def _png_array(array: np.ndarray) -> np.ndarray:
    """``array`` as a contiguous uint8 (H, W)/(H, W, 3|4) or little-endian uint16 (H, W) array."""
    data = np.asarray(array)
    if data.dtype == bool:
        data = data.astype(np.uint8) * np.uint8(255)
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[..., 0]
    if data.dtype == np.uint16 and data.ndim == 2:
        return np.ascontiguousarray(data.astype("<u2"))
    if data.dtype == np.uint8 and (data.ndim == 2 or (data.ndim == 3 and data.shape[2] in (3, 4))):
        return np.ascontiguousarray(data)
    raise ValueError(
        f"write_png accepts bool/uint8 (H, W), uint8 (H, W, 3|4) or uint16 (H, W); got "
        f"dtype {data.dtype} shape {data.shape}. Cast first, e.g. array.astype(np.uint8)"
    )


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ADLER_MOD = 65521


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _deflate_segment(raw: bytes) -> bytes:
    """Raw deflate of ``raw``, full-flushed so that segments can be concatenated into one stream."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, -15, 9, zlib.Z_RLE)
    return compressor.compress(raw) + compressor.flush(zlib.Z_FULL_FLUSH)


@functools.lru_cache(maxsize=256)
def _zero_rows(row_bytes: int, rows: int) -> bytes:
    return _deflate_segment(bytes(row_bytes * rows))


def _zero_segments(row_bytes: int, rows: int) -> list[bytes]:
    """Deflate segments of ``rows`` all-zero scanlines, from cached power-of-two blocks."""
    return [_zero_rows(row_bytes, 1 << bit) for bit in range(rows.bit_length()) if rows >> bit & 1]


def placed_size(
    shape: tuple[int, ...], top: int, left: int, height: int | None, width: int | None
) -> tuple[int, int]:
    """(height, width) of the image a (rows, cols) crop is placed in at (``top``, ``left``); the crop's own
    size where not given. ValueError when the crop does not fit: the one placement rule of the mask writers."""
    rows, cols = shape
    height = rows if height is None else height
    width = cols if width is None else width
    if top < 0 or left < 0 or top + rows > height or left + cols > width:
        raise ValueError(
            f"a {rows}x{cols} mask at row {top}, column {left} does not fit a {height}x{width} image"
        )
    return height, width


def encode_mask_png(
    mask: np.ndarray, *, top: int = 0, left: int = 0, height: int | None = None, width: int | None = None
) -> bytes:
    """8-bit grey 0/255 PNG of a boolean mask, fast for sparse masks.

    ``mask`` is (h, w) bool placed with its top-left pixel at row ``top``, column ``left`` of a
    ``height`` x ``width`` image (default: the mask's own size, at 0, 0), so a region kept as a crop
    of its box is written image-sized without building the full array. Only the scanlines the crop
    covers are compressed; the all-zero rows above and below come from cached deflate blocks. Same
    input, same bytes; any PNG reader decodes it to the 0/255 array.
    """
    rows_h, cols_w = mask.shape
    height, width = placed_size(mask.shape, top, left, height, width)
    scanlines = np.zeros((rows_h, width + 1), np.uint8)  # column 0: PNG filter type 0 (None)
    scanlines[:, 1 + left : 1 + left + cols_w] = mask.astype(np.uint8) * np.uint8(255)
    middle = scanlines.tobytes()
    bottom = top + rows_h
    parts = [
        *_zero_segments(width + 1, top),
        _deflate_segment(middle),
        *_zero_segments(width + 1, height - bottom),
    ]
    adler = zlib.adler32(middle)  # zero bytes before and after: a stays, b grows by count * a
    a, b = adler & 0xFFFF, adler >> 16
    b = (b + a * (width + 1) * (height - bottom) + (width + 1) * top) % _ADLER_MOD
    stream = b"\x78\x01" + b"".join(parts) + b"\x03\x00" + struct.pack(">I", (b << 16) | a)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        _PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", stream) + _png_chunk(b"IEND", b"")
    )


def write_mask_png(
    path: str | Path,
    mask: np.ndarray,
    *,
    top: int = 0,
    left: int = 0,
    height: int | None = None,
    width: int | None = None,
    durable: bool = True,
) -> None:
    """Write :func:`encode_mask_png` output; ``durable`` as in :func:`write_png`."""
    _write(path, encode_mask_png(mask, top=top, left=left, height=height, width=width), durable)


def _fast_png(data: np.ndarray) -> bytes:
    """8-bit grey/RGB/RGBA PNG: Sub filter on every row, then Huffman-only deflate.

    About 4x faster than Pillow at compress level 1 and about as small on scans and photographs (the Sub
    filter turns smooth rows into small residuals that Huffman coding alone packs well).
    """
    height, width = data.shape[:2]
    channels = 1 if data.ndim == 2 else data.shape[2]
    flat = data.reshape(height, width * channels)
    scanlines = np.empty((height, width * channels + 1), np.uint8)
    scanlines[:, 0] = 1  # PNG filter type 1 (Sub): each byte minus the byte one pixel to its left
    scanlines[:, 1 : 1 + channels] = flat[:, :channels]
    np.subtract(flat[:, channels:], flat[:, :-channels], out=scanlines[:, 1 + channels :])
    compressor = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    stream = compressor.compress(scanlines.tobytes()) + compressor.flush()
    colour_type = {1: 0, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        _PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", stream) + _png_chunk(b"IEND", b"")
    )


def encode_png(array: np.ndarray, compress_level: int = 6, *, fast: bool = False) -> bytes:
    """PNG bytes of ``array`` (see :func:`write_png` for the accepted arrays); no metadata chunks.

    Boolean (H, W) masks take the fast sparse path of :func:`encode_mask_png`. ``fast``: uint8 arrays
    are encoded by a Sub filter and Huffman-only deflate instead of Pillow (``compress_level`` unused).
    """
    if array.dtype == bool and array.ndim == 2:
        return encode_mask_png(array)
    data = _png_array(array)
    if fast and data.dtype == np.uint8:
        return _fast_png(data)
    buffer = io.BytesIO()
    Image.fromarray(data).save(buffer, format="PNG", compress_level=compress_level, optimize=False)
    return buffer.getvalue()


def write_png(
    path: str | Path, array: np.ndarray, *, durable: bool = True, compress_level: int = 6, fast: bool = False
) -> None:
    """Write ``array`` as PNG, creating parent folders; same array -> same bytes.

    bool ``(H, W)`` -> 8-bit grey 0/255; uint8 ``(H, W)``/``(H, W, 3)``/``(H, W, 4)`` -> L/RGB/RGBA;
    uint16 ``(H, W)`` -> 16-bit grey. No metadata chunks (no time stamp). ``durable`` (default) writes
    atomically with fsync; ``durable=False`` writes in place, for files that a later commit mark covers
    (a build's masks: its shard is redone whole unless its part file was written after them).
    ``compress_level`` and ``fast`` as in :func:`encode_png`.
    Raises ValueError for another dtype/shape or a suffix other than ``.png``.
    """
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise ValueError(
            f"write_png writes PNG files; got path {target} (suffix {target.suffix!r}), use a .png name"
        )
    _write(target, encode_png(array, compress_level, fast=fast), durable)


def _write(target: str | Path, data: bytes, durable: bool) -> None:
    if durable:
        atomic_write_bytes(target, data)
        return
    try:  # the folder usually exists already: skip the mkdir call (many small mask files)
        _write_plain(target, data)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        _write_plain(target, data)


def _write_plain(target: str | Path, data: bytes) -> None:
    """Create or truncate ``target`` and write ``data``: open, write, close and no other system call."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


# PNG chunks kept by :func:`strip_image_metadata`: the critical ones and those that say how to show the
# pixels. Text (tEXt, zTXt, iTXt), EXIF (eXIf), time (tIME) and private chunks are dropped.
_PNG_KEPT = {
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"cICP",
    b"pHYs", b"bKGD",
}  # fmt: skip
# JPEG markers kept before the scan: JFIF (APP0), ICC profile (APP2), Adobe colour transform (APP14).
# EXIF and XMP (APP1), IPTC (APP13), the other APPn and comments (COM) are dropped.
_JPEG_APP_KEPT = {0xE0: b"JFIF", 0xE2: b"ICC_PROFILE", 0xEE: b"Adobe"}


def _png_without_metadata(path: Path, data: bytes) -> bytes:
    parts, pos = [data[:8]], 8
    while pos + 8 <= len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        kind, end = data[pos + 4 : pos + 8], pos + 12 + length
        if end > len(data):
            raise ReadError(path, f"PNG chunk {kind!r} at byte {pos} runs past the end of the file")
        if kind in _PNG_KEPT:
            parts.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            return b"".join(parts)
    raise ReadError(path, "PNG without an IEND chunk: the file is truncated")


def _jpeg_without_metadata(path: Path, data: bytes) -> bytes:
    parts, pos = [data[:2]], 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ReadError(path, f"JPEG marker expected at byte {pos}, found 0x{data[pos]:02x}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: the entropy-coded data and the rest are kept as they are
            parts.append(data[pos:])
            return b"".join(parts)
        end = pos + 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        signature = _JPEG_APP_KEPT.get(marker)
        dropped = 0xE0 <= marker <= 0xEF or marker == 0xFE  # APPn or COM
        if not dropped or (signature and data[pos + 4 : pos + 4 + len(signature)] == signature):
            parts.append(data[pos:end])
        pos = end
    raise ReadError(path, "JPEG without a start-of-scan marker: truncated or not a JPEG")


def strip_image_metadata(path: str | Path) -> bytes:
    """The bytes of image file ``path`` without metadata that may name a patient.

    PNG: only the chunks of ``_PNG_KEPT`` (pixels, palette, colour) are kept, byte for byte; JPEG: the
    segments before the scan except EXIF/XMP (APP1), IPTC (APP13), other APPn and comments are kept,
    and the compressed scan is copied unchanged (no re-encoding, same pixels). BMP holds no metadata
    and is returned as is. Other formats (TIFF) are decoded and written again in the same format with
    no tags but the pixel layout. Raises ReadError for a missing or malformed file.
    """
    p = require_file(path)
    _check_suffix(p)
    data = p.read_bytes()
    if data.startswith(_PNG_SIGNATURE):
        return _png_without_metadata(p, data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_without_metadata(p, data)
    if data.startswith(b"BM"):
        return data
    with _open(p, decode=True) as image:
        clean = image.copy()  # a plain Image: no tag directory for the TIFF writer to carry over
        clean.info = {}
        buffer = io.BytesIO()
        clean.save(buffer, format=image.format)
    return buffer.getvalue()


def image_file_bytes(path: str | Path, *, keep_metadata: bool = False) -> bytes:
    """The bytes of image file ``path`` as medground passes it on: without its metadata
    (:func:`strip_image_metadata`), or as stored with ``keep_metadata``. ReadError for a missing file or
    an unsupported suffix."""
    if keep_metadata:
        p = require_file(path)
        _check_suffix(p)
        return p.read_bytes()
    return strip_image_metadata(path)


def copy_image(
    src: str | Path, dst: str | Path, *, keep_metadata: bool = False, durable: bool = True
) -> None:
    """Copy image file ``src`` to ``dst`` (parent folders created) without its metadata, or byte for
    byte with ``keep_metadata`` (:func:`image_file_bytes`); ``durable`` as in :func:`write_png`."""
    _write(dst, image_file_bytes(src, keep_metadata=keep_metadata), durable)
