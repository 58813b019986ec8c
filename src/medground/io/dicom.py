"""DICOM (pydicom 3): image series -> canonical :class:`Volume`, and DICOM SEG -> label frames.

Geometry: DICOM patient coordinates are LPS+ (x -> patient Left, y -> Posterior, z -> Superior);
medground volumes are RAS+, so x and y are negated. For slice ``k`` sorted by position along the slice
normal ``n = row_dir x col_dir`` (ImageOrientationPatient), pixel ``(row r, column c)`` sits at
``IPP_k + c * dc * row_dir + r * dr * col_dir`` with ``PixelSpacing = [dr, dc]``.
"""

from __future__ import annotations

import io
import struct
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medground.io.errors import ReadError, require_file
from medground.io.nifti import Volume, canonical_volume

if TYPE_CHECKING:  # pydicom is imported where a file is read: it costs ~0.2 s at start-up
    import pydicom

__all__ = [
    "DEFLATED",
    "MemoryFile",
    "dicom_series_info",
    "load_dicom_files",
    "load_dicom_seg",
    "load_dicom_series",
    "transfer_syntax",
]

DEFLATED = "1.2.840.10008.1.2.1.99"
"""Deflated Explicit VR Little Endian: the whole dataset after the file meta is one zlib stream, which
pydicom inflates at once, unbounded, even to read a header (a few hundred kB can inflate to GBs)."""
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"})

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_ORIENT_ATOL = 1e-4
_CODEC_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg and pylibjpeg-libjpeg (pip install pylibjpeg pylibjpeg-libjpeg)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg and pylibjpeg-libjpeg (pip install pylibjpeg pylibjpeg-libjpeg)",
    "1.2.840.10008.1.2.4.57": "pylibjpeg and pylibjpeg-libjpeg (pip install pylibjpeg pylibjpeg-libjpeg)",
    "1.2.840.10008.1.2.4.70": "pylibjpeg and pylibjpeg-libjpeg (pip install pylibjpeg pylibjpeg-libjpeg)",
    "1.2.840.10008.1.2.4.80": "pyjpegls (pip install pyjpegls) or pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.81": "pyjpegls (pip install pyjpegls) or pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg (pip install pylibjpeg pylibjpeg-openjpeg)",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg (pip install pylibjpeg pylibjpeg-openjpeg)",
}


@dataclass(frozen=True)
class MemoryFile:
    """A file held in memory (an upload that must never touch disk): ``name`` names it in errors."""

    name: str
    data: bytes = b""

    def __str__(self) -> str:
        return self.name


def transfer_syntax(data: bytes) -> str | None:
    """The TransferSyntaxUID (0002,0010) of a DICOM Part-10 file held in memory, read from its file meta
    group (explicit VR little endian, never compressed) without touching the dataset after it; None when
    ``data`` has no DICM preamble or no such element. Lets a caller refuse :data:`DEFLATED` first."""
    if len(data) < 132 or data[128:132] != b"DICM":
        return None
    pos = 132
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            return None
        if data[pos + 4 : pos + 6] in _LONG_VRS:
            if pos + 12 > len(data):
                return None
            length, start = struct.unpack_from("<I", data, pos + 8)[0], pos + 12
        else:
            length, start = struct.unpack_from("<H", data, pos + 6)[0], pos + 8
        if element == 0x0010:
            return data[start : start + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = start + length
    return None


def _source(path: Path | MemoryFile) -> Path | io.BytesIO:
    return io.BytesIO(path.data) if isinstance(path, MemoryFile) else path


@dataclass(frozen=True)
class _Slice:
    """One image file's header (pixels are read later, only for the chosen series)."""

    path: Path | MemoryFile
    series_uid: str
    description: str
    instance: int
    shape: tuple[int, int]
    frames: int
    orientation: np.ndarray | None  # (6,) row then column direction cosines, LPS
    position: np.ndarray | None  # (3,) ImagePositionPatient, LPS mm
    pixel_spacing: tuple[float, float]  # (dr between rows, dc between columns) mm
    gap: float | None  # SpacingBetweenSlices or SliceThickness, mm


def _floats(ds: pydicom.Dataset, keyword: str, n: int) -> np.ndarray | None:
    value = ds.get(keyword)
    if value is None or len(value) != n:
        return None
    return np.asarray([float(v) for v in value], dtype=np.float64)


def _header(path: Path | MemoryFile) -> _Slice | None:
    """Header of an image DICOM file; None for a non-DICOM file or a DICOM object without pixels."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(_source(path), stop_before_pixels=True)
    except InvalidDicomError:
        return None  # no DICM preamble: not a DICOM Part-10 file
    except Exception as exc:
        raise ReadError(
            path,
            f"DICOM header could not be read, the file is truncated or corrupt ({type(exc).__name__}: {exc})",
        ) from exc
    if "Rows" not in ds or "Columns" not in ds or "SeriesInstanceUID" not in ds:
        sop_class = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
        if sop_class is not None and str(getattr(sop_class, "name", "")).endswith("Image Storage"):
            raise ReadError(
                path,
                f"{sop_class.name} file without Rows/Columns/SeriesInstanceUID: the header "
                "is truncated or corrupt; re-export or re-download it",
            )
        return None  # RTSTRUCT, RTPLAN, DICOMDIR...: no image grid
    spacing = _floats(ds, "PixelSpacing", 2)
    gap = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
    return _Slice(
        path=path,
        series_uid=str(ds.SeriesInstanceUID),
        description=str(ds.get("SeriesDescription", "")),
        instance=int(ds.get("InstanceNumber") or 0),
        shape=(int(ds.Rows), int(ds.Columns)),
        frames=int(ds.get("NumberOfFrames") or 1),
        orientation=_floats(ds, "ImageOrientationPatient", 6),
        position=_floats(ds, "ImagePositionPatient", 3),
        pixel_spacing=(1.0, 1.0) if spacing is None else (float(spacing[0]), float(spacing[1])),
        gap=None if gap is None else float(gap),
    )


def _choose_series(folder: str | Path, slices: list[_Slice], series_uid: str | None) -> list[_Slice]:
    groups: dict[str, list[_Slice]] = defaultdict(list)
    for s in slices:
        groups[s.series_uid].append(s)
    listing = "; ".join(
        f"{uid} ({g[0].description or 'no description'}, {len(g)} files)" for uid, g in sorted(groups.items())
    )
    if series_uid is not None:
        if series_uid not in groups:
            raise ReadError(folder, f"series {series_uid} not found; series here: {listing}")
        return groups[series_uid]
    if len(groups) > 1:
        raise ReadError(
            folder, f"holds {len(groups)} image series: {listing}. Pass series_uid=... to pick one"
        )
    return next(iter(groups.values()))


def _check_consistent(folder: str | Path, series: list[_Slice]) -> None:
    first = series[0]
    for s in series:
        if s.frames != 1:
            raise ReadError(
                s.path,
                f"multi-frame image ({s.frames} frames); load_dicom_series reads one "
                "frame per file (enhanced multi-frame DICOM is not supported)",
            )
        if s.shape != first.shape or not np.allclose(s.pixel_spacing, first.pixel_spacing, atol=1e-4):
            raise ReadError(
                folder,
                f"slices differ in size or pixel spacing: {first.path.name} "
                f"{first.shape}@{first.pixel_spacing} vs {s.path.name} "
                f"{s.shape}@{s.pixel_spacing}",
            )
        if (s.orientation is None) != (first.orientation is None) or (
            s.orientation is not None and not np.allclose(s.orientation, first.orientation, atol=_ORIENT_ATOL)
        ):
            raise ReadError(
                folder,
                f"slices differ in ImageOrientationPatient ({first.path.name} vs "
                f"{s.path.name}); expected one stack of parallel slices",
            )


def _sort(folder: str | Path, series: list[_Slice]) -> tuple[list[_Slice], np.ndarray | None]:
    """Sort along the slice normal (or by InstanceNumber without geometry); also return positions."""
    first = series[0]
    if first.orientation is None or any(s.position is None for s in series):
        return sorted(series, key=lambda s: (s.instance, s.path.name)), None
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    ordered = sorted(series, key=lambda s: (float(normal @ s.position), s.instance))
    along = np.asarray([float(normal @ s.position) for s in ordered])
    if len(along) > 1 and np.min(np.diff(along)) < 1e-3:
        dup = [s.path.name for s, d in zip(ordered[1:], np.diff(along), strict=True) if d < 1e-3][:3]
        raise ReadError(
            folder,
            f"several slices share one position (e.g. {', '.join(dup)}): several echoes, "
            "phases or time points in one series? Split them into folders first",
        )
    return ordered, along


def _affine_lps(folder: str | Path, ordered: list[_Slice], along: np.ndarray | None) -> np.ndarray:
    """4x4 voxel (column i, row j, slice k) -> LPS mm."""
    first = ordered[0]
    dr, dc = first.pixel_spacing
    if along is None:
        row_dir, col_dir, origin = np.eye(3)[0], np.eye(3)[1], np.zeros(3)
    else:
        row_dir, col_dir, origin = first.orientation[:3], first.orientation[3:], first.position
    normal = np.cross(row_dir, col_dir)
    if along is not None and len(ordered) > 1:
        gaps = np.diff(along)
        if np.ptp(gaps) > max(1e-2, 0.01 * float(np.mean(gaps))):
            raise ReadError(
                folder,
                f"uneven slice gaps ({np.round(np.unique(np.round(gaps, 3)), 3).tolist()} "
                "mm): missing slices? Expected one regular stack",
            )
        step = (ordered[-1].position - first.position) / (len(ordered) - 1)
    else:
        step = normal * (first.gap or 1.0)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2], affine[:3, 3] = row_dir * dc, col_dir * dr, step, origin
    return affine


def _read_dataset(path: Path | MemoryFile) -> pydicom.Dataset:
    import pydicom

    try:
        return pydicom.dcmread(_source(path))
    except Exception as exc:
        raise ReadError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc


def _decode(path: Path | MemoryFile, ds: pydicom.Dataset) -> np.ndarray:
    """``ds.pixel_array`` with codec failures turned into a ReadError naming the package to install."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    try:
        return ds.pixel_array
    except Exception as exc:
        if syntax is not None and syntax.is_compressed:
            package = _CODEC_PACKAGES.get(str(syntax), "pylibjpeg with its plugins")
            raise ReadError(
                path,
                f"cannot decode pixel data compressed as {syntax.name} ({syntax}): no "
                f"installed decoder handles it. Install {package}, or python-gdcm "
                f"(pip install python-gdcm). Decoder said: {exc}",
            ) from exc
        raise ReadError(
            path,
            f"pixel data could not be decoded, the file is truncated or corrupt "
            f"({type(exc).__name__}: {exc})",
        ) from exc


def _slice_pixels(path: Path | MemoryFile) -> np.ndarray:
    """(rows, columns) float32 of one slice, RescaleSlope/Intercept applied (CT in HU)."""
    ds = _read_dataset(path)
    pixels = _decode(path, ds)
    if pixels.ndim != 2:
        raise ReadError(
            path,
            f"pixel array has shape {pixels.shape}; expected one grey (rows, columns) frame "
            f"(SamplesPerPixel {ds.get('SamplesPerPixel', 1)})",
        )
    slope = ds.get("RescaleSlope")
    intercept = ds.get("RescaleIntercept")
    values = pixels.astype(np.float32)
    if slope is not None and float(slope) != 1.0:
        values = values * np.float32(float(slope))
    if intercept is not None and float(intercept) != 0.0:
        values = values + np.float32(float(intercept))
    return values


def dicom_series_info(folder: str | Path) -> dict[str, str] | None:
    """``{"modality", "description", "series_uid", "patient_id"}`` of the first DICOM image file directly in
    ``folder`` (header only), or None when it holds none. Cheap enough for planning a build."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            continue
        except Exception as exc:
            raise ReadError(path, f"DICOM header could not be read ({type(exc).__name__}: {exc})") from exc
        if "Rows" in ds and "SeriesInstanceUID" in ds:
            return {
                "modality": str(ds.get("Modality", "")),
                "description": str(ds.get("SeriesDescription", "")),
                "series_uid": str(ds.SeriesInstanceUID),
                "patient_id": str(ds.get("PatientID", "") or "").strip(),
            }
    return None


def load_dicom_series(folder: str | Path, series_uid: str | None = None) -> Volume:
    """Read one DICOM image series from a folder (not recursive) into a canonical RAS+ float32 Volume.

    Files that are not DICOM Part-10 (no 'DICM' preamble) and DICOM objects without an image grid
    (RTSTRUCT, RTPLAN, DICOMDIR) are skipped. Slices are sorted along the slice normal (InstanceNumber
    when ImagePositionPatient/ImageOrientationPatient are missing: the affine is then nominal, identity
    directions and SpacingBetweenSlices/SliceThickness gaps). Raises ReadError for a folder without images,
    several series (unless ``series_uid`` picks one), inconsistent or duplicate slices, uneven gaps, or
    an undecodable codec (naming the package to install).
    """
    root = Path(folder)
    if not root.is_dir():
        raise ReadError(root, "not a folder; load_dicom_series expects the folder holding one series' files")
    return _series_volume(root, [p for p in sorted(root.iterdir()) if p.is_file()], series_uid)


def load_dicom_files(files: Sequence[MemoryFile], where: str, series_uid: str | None = None) -> Volume:
    """:func:`load_dicom_series` over files held in memory (uploads: nothing is written to disk);
    ``where`` names them in errors. The Volume's ``path`` is None."""
    return _series_volume(where, files, series_uid)


def _series_volume(root: str | Path, files: Sequence[Path | MemoryFile], series_uid: str | None) -> Volume:
    slices = [h for p in files if (h := _header(p)) is not None]
    if not slices:
        raise ReadError(
            root,
            "no DICOM image files found (files without the DICM preamble and non-image "
            "objects such as RTSTRUCT are skipped)",
        )
    series = _choose_series(root, slices, series_uid)
    _check_consistent(root, series)
    ordered, along = _sort(root, series)
    affine = _LPS_TO_RAS @ _affine_lps(root, ordered, along)
    # Voxel axes (i = column, j = row, k = slice): each (rows, columns) frame is transposed.
    array = np.stack([_slice_pixels(s.path).T for s in ordered], axis=2)
    return canonical_volume(array, affine, root if isinstance(root, Path) else None)


def _segment_numbers(path: Path, ds: pydicom.Dataset, n_frames: int) -> np.ndarray:
    # Leading groups are used when a file lists more groups than it has frames (pydicom's
    # liver_1frame.dcm: a 3-frame SEG cut to its first frame without updating the groups).
    groups = ds.get("PerFrameFunctionalGroupsSequence")
    if groups is None or len(groups) < n_frames:
        raise ReadError(
            path,
            f"SEG has {n_frames} frames but {0 if groups is None else len(groups)} per-frame "
            "functional groups; expected one per frame",
        )
    try:
        return np.asarray(
            [int(g.SegmentIdentificationSequence[0].ReferencedSegmentNumber) for g in groups[:n_frames]]
        )
    except (AttributeError, IndexError) as exc:
        raise ReadError(
            path, "a SEG frame lacks SegmentIdentificationSequence/ReferencedSegmentNumber"
        ) from exc


def load_dicom_seg(path: str | Path) -> tuple[np.ndarray, dict[int, str]]:
    """Read a DICOM SEG: ``(labels, names)``.

    ``labels``: (frames, rows, columns) int32; a pixel holds the frame's segment number where the frame is
    on (binary > 0, fractional >= half of MaximumFractionalValue) and 0 elsewhere. Frames stay in file
    order and are not merged by position. ``names``: segment number -> SegmentLabel.
    """
    p = require_file(path)
    ds = _read_dataset(p)
    if str(ds.get("SOPClassUID", "")) != "1.2.840.10008.5.1.4.1.1.66.4":
        found = getattr(ds.get("SOPClassUID"), "name", ds.get("SOPClassUID"))
        raise ReadError(p, f"not a DICOM SEG (SOP class {found}); expected Segmentation Storage")
    pixels = _decode(p, ds)
    frames = pixels[None] if pixels.ndim == 2 else pixels
    numbers = _segment_numbers(p, ds, frames.shape[0])
    if str(ds.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL":
        on = frames.astype(np.float64) >= float(ds.get("MaximumFractionalValue", 255)) / 2.0
    else:
        on = frames > 0
    labels = np.where(on, numbers[:, None, None], 0).astype(np.int32)
    names = {
        int(item.SegmentNumber): str(item.get("SegmentLabel", "")) for item in ds.get("SegmentSequence", [])
    }
    return labels, names
