"""NIfTI volumes (nibabel): load to a canonical RAS+ array, slice for display, write labels back.

Frames. Every :class:`Volume` array is in nibabel's *closest canonical* orientation: array axis 0 runs
towards patient Right, axis 1 towards Anterior, axis 2 towards Superior (RAS+), i.e. ``a[x, y, z]`` with
``x`` increasing to the patient's right. ``affine`` maps ``(x, y, z, 1)`` voxel indices to RAS+ mm.
The file's own voxel order is kept in ``original_axcodes``/``original_affine`` so labels can be written
back in it (:func:`write_nifti_like`). Display slices and intensity windows live in
:mod:`medground.io.display` (also importable from here).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medground.io.atomic import atomic_output

# Re-exported so the slicing/windowing helpers can also be imported from here (they live in display).
from medground.io.display import (  # noqa: F401
    CT_WINDOWS,
    axis_length,
    mr_percentiles,
    normalize_mr,
    rescale_to_uint8,
    slice_spacing,
    slice_volume,
    window_ct,
)
from medground.io.errors import ReadError, require_file

if TYPE_CHECKING:  # nibabel is imported where a volume is read or written: it costs ~0.2 s at start-up
    import nibabel as nib

__all__ = [
    "Volume",
    "canonical_volume",
    "load_label_volume",
    "load_volume",
    "load_volume_bytes",
    "to_original_order",
    "write_nifti_like",
]

_AFFINE_ATOL = 1e-3


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D scan or label map in canonical RAS+ voxel order.

    Fields:
        array: (X, Y, Z) voxels, axis 0 -> patient Right, 1 -> Anterior, 2 -> Superior; float32 for
            images (scaling applied, CT in HU), int32 for label volumes.
        spacing: (sx, sy, sz) voxel size in mm along the three canonical array axes.
        affine: 4x4 float64 mapping canonical voxel indices to RAS+ world mm.
        original_axcodes: axis codes of the file's own voxel order, e.g. ('P', 'S', 'R').
        original_affine: 4x4 float64 affine of the file's own voxel order.
        path: the file (or DICOM folder) it came from; None when built in memory.
        header: the source NIfTI header (qform/sform codes, units), reused when writing labels back;
            None when there is none.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    original_axcodes: tuple[str, str, str]
    original_affine: np.ndarray
    path: Path | None = None
    header: nib.Nifti1Header | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(X, Y, Z) of the canonical array."""
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]


def _load_image(path: str | Path) -> tuple[Path, nib.spatialimages.SpatialImage]:
    import nibabel as nib

    p = require_file(path)
    try:
        image = nib.load(p)
    except Exception as exc:  # ImageFileError, EOFError, gzip/zlib errors, header errors...
        raise ReadError(
            p,
            f"not a readable NIfTI/volume file ({type(exc).__name__}: {exc}); expected "
            ".nii or .nii.gz (or another format nibabel reads)",
        ) from exc
    _check_3d(p, image)
    return p, image


def _check_3d(p: str | Path, image: nib.spatialimages.SpatialImage) -> None:
    if len(image.shape) < 3:
        raise ReadError(p, f"volume is {len(image.shape)}D with shape {image.shape}; expected 3D")
    extra = image.shape[3:]
    if any(n != 1 for n in extra):
        raise ReadError(
            p,
            f"volume has shape {image.shape}; expected 3D (a 4D file is accepted only "
            "when its 4th+ dimensions are 1). Split the series into 3D files first",
        )


def _nifti_header(image: nib.spatialimages.SpatialImage) -> nib.Nifti1Header | None:
    import nibabel as nib

    return image.header if isinstance(image.header, nib.Nifti1Header) else None


def _read_data(path: str | Path, dataobj: object, dtype: type | None) -> np.ndarray:
    """Read (and scale) voxel data; wraps truncated/corrupt payloads into ReadError."""
    try:
        return np.asarray(dataobj, dtype=dtype) if dtype is not None else np.asanyarray(dataobj)
    except Exception as exc:
        raise ReadError(
            path,
            f"voxel data could not be read, the file is truncated or corrupt "
            f"({type(exc).__name__}: {exc}); re-export or re-download it",
        ) from exc


def canonical_volume(
    array: np.ndarray,
    affine: np.ndarray,
    path: str | Path | None = None,
    header: nib.Nifti1Header | None = None,
) -> Volume:
    """Reorient ``array`` (3D, voxel order of ``affine``) to closest-canonical RAS+ and wrap it in a Volume.

    Same result as ``nibabel.as_closest_canonical``; shared by the NIfTI and DICOM readers so both give
    the same frame. ``affine``: 4x4 voxel -> RAS+ mm of ``array``'s own order.
    """
    import nibabel as nib

    original_affine = np.asarray(affine, dtype=np.float64)
    ornt = nib.orientations.io_orientation(original_affine)
    canonical = nib.orientations.apply_orientation(array, ornt)
    affine = original_affine @ nib.orientations.inv_ornt_aff(ornt, array.shape)
    return Volume(
        array=np.ascontiguousarray(canonical),
        spacing=tuple(float(v) for v in nib.affines.voxel_sizes(affine)),  # type: ignore[arg-type]
        affine=affine,
        original_axcodes=tuple(nib.orientations.ornt2axcodes(ornt)),  # type: ignore[arg-type]
        original_affine=original_affine,
        path=None if path is None else Path(path),
        header=header,
    )


def load_volume(path: str | Path) -> Volume:
    """Load a 3D image volume as float32 in canonical RAS+ order (header scaling applied: CT in HU).

    A trailing 4th dimension of length 1 is dropped. Raises ReadError for a missing, corrupt or
    truncated file, a volume that is not 3D, or any NaN/inf voxel (the count is reported).
    """
    p, image = _load_image(path)
    return _image_volume(p, image, p)


def load_volume_bytes(data: bytes, name: str) -> Volume:
    """:func:`load_volume` for an uncompressed NIfTI-1 or NIfTI-2 file held in memory (an upload that
    must never touch disk; gunzip it first); ``name`` only names it in errors. ``path`` is None."""
    import nibabel as nib

    kind = nib.Nifti2Image if data[:4] in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c") else nib.Nifti1Image
    try:
        image = kind.from_bytes(data)
    except Exception as exc:
        raise ReadError(
            name, f"not a readable NIfTI file ({type(exc).__name__}: {exc}); expected .nii or .nii.gz"
        ) from exc
    _check_3d(name, image)
    return _image_volume(name, image, None)


def _image_volume(where: str | Path, image: nib.spatialimages.SpatialImage, path: Path | None) -> Volume:
    array = _read_data(where, image.dataobj, np.float32).reshape(image.shape[:3])
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise ReadError(
            where,
            f"{bad} of {array.size} voxels are NaN or inf; expected finite intensities. "
            "Replace them (e.g. numpy.nan_to_num) and save again",
        )
    if np.linalg.matrix_rank(np.asarray(image.affine)[:3, :3]) < 3:
        raise ReadError(
            where,
            f"its affine does not map voxels to 3D space (rank < 3):\n{image.affine}\nFix the "
            "sform/qform of the file (e.g. nibabel's set_sform) and save again",
        )
    return canonical_volume(array, image.affine, path, _nifti_header(image))


def _integer_labels(path: Path, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind in "iub":
        if array.size and array.dtype.itemsize >= 4 and (array.min() < -(2**31) or array.max() >= 2**31):
            raise ReadError(path, "label values do not fit in int32")
        return array.astype(np.int32)
    finite = np.isfinite(array)
    if not finite.all():
        raise ReadError(
            path, f"{int(np.count_nonzero(~finite))} label voxels are NaN or inf; expected integers"
        )
    rounded = np.round(array)
    if not np.array_equal(rounded, array):
        bad = np.unique(array[rounded != array])[:5]
        raise ReadError(
            path,
            f"label volume holds non-integer values (e.g. {bad.tolist()}); expected integer "
            "labels. Is this an image or a probability map rather than a label map?",
        )
    if array.size and (rounded.min() < -(2**31) or rounded.max() >= 2**31):
        raise ReadError(path, "label values do not fit in int32")
    return rounded.astype(np.int32)


def load_label_volume(path: str | Path, like: Volume | None = None) -> Volume:
    """Load a 3D label volume as int32 in canonical RAS+ order.

    Float files must hold integer values. With ``like`` (the image volume), the canonical shape and
    affine must match it (affine within 1e-3), else ReadError naming both files.
    """
    p, image = _load_image(path)
    array = _integer_labels(p, _read_data(p, image.dataobj, None).reshape(image.shape[:3]))
    volume = canonical_volume(array, image.affine, p, _nifti_header(image))
    if like is not None:
        _check_same_grid(volume, like)
    return volume


def _check_same_grid(label: Volume, image: Volume) -> None:
    same_shape = label.array.shape == image.array.shape
    if same_shape and np.allclose(label.affine, image.affine, rtol=0.0, atol=_AFFINE_ATOL):
        return
    with np.printoptions(precision=4, suppress=True):
        detail = (
            f"label shape {label.array.shape} vs image {image.path} shape {image.array.shape}"
            if not same_shape
            else f"label affine\n{label.affine}\nvs image {image.path} affine\n{image.affine}"
        )
    raise ReadError(
        label.path or "<label>",
        f"label is not on the image's voxel grid: {detail}. Resample the "
        "label onto the image grid (nearest neighbour, e.g. nibabel.processing.resample_from_to"
        "(label, image, order=0)) or pair it with the right image",
    )


def to_original_order(array: np.ndarray, like: Volume) -> np.ndarray:
    """Undo the canonical reorientation: canonical (X, Y, Z) -> the file's own voxel order."""
    import nibabel as nib

    file_ornt = nib.orientations.io_orientation(like.original_affine)
    ras_ornt = nib.orientations.axcodes2ornt(("R", "A", "S"))
    back = nib.orientations.ornt_transform(ras_ornt, file_ornt)
    return np.ascontiguousarray(nib.orientations.apply_orientation(array, back))


def _label_image(array: np.ndarray, like: Volume) -> nib.Nifti1Image:
    import nibabel as nib

    image = nib.Nifti1Image(array, like.original_affine)
    if like.header is not None:  # keep the source's qform/sform (and their codes) so affines round-trip
        qform, qcode = like.header.get_qform(coded=True)
        sform, scode = like.header.get_sform(coded=True)
        image.set_qform(qform, int(qcode))
        image.set_sform(sform, int(scode))
        image.header.set_xyzt_units(*like.header.get_xyzt_units())
    image.set_data_dtype(np.uint8)
    image.header.set_slope_inter(1.0, 0.0)
    return image


def write_nifti_like(path: str | Path, mask_array_canonical: np.ndarray, like: Volume) -> None:
    """Write a uint8 label volume in the original voxel order and affine of ``like``, atomically.

    ``mask_array_canonical``: (X, Y, Z) integer or bool labels in ``like``'s canonical RAS+ order,
    values 0..255. ``path`` must end in .nii or .nii.gz. Raises ValueError for a wrong shape,
    dtype, value range or suffix.
    """
    target = Path(path)
    if not (target.name.endswith(".nii") or target.name.endswith(".nii.gz")):
        raise ValueError(f"write_nifti_like writes NIfTI; got {target}, use a .nii or .nii.gz name")
    mask = np.asarray(mask_array_canonical)
    if mask.shape != like.array.shape:
        raise ValueError(
            f"mask shape {mask.shape} does not match the volume {like.path} shape "
            f"{like.array.shape} (canonical RAS+ order)"
        )
    if mask.dtype.kind not in "iub":
        raise ValueError(f"mask dtype {mask.dtype} is not integer/bool; threshold or round it first")
    if mask.size and (int(mask.min()) < 0 or int(mask.max()) > 255):
        raise ValueError(f"mask values {int(mask.min())}..{int(mask.max())} do not fit uint8 (0..255)")
    import nibabel as nib

    image = _label_image(to_original_order(mask.astype(np.uint8), like), like)
    with atomic_output(target) as tmp:
        nib.save(image, tmp)
