"""Readers and writers of image, mask and volume files.

Every image, mask, volume or DICOM file medground is given (datasets, queries, supports, predictions) is
read here, and the images, masks and volumes it produces (build outputs, segmentations) are written
here, or copied from an input file read and checked here (without its EXIF/XMP/PNG text unless asked:
:func:`copy_image`). Figures that reports and plots draw and save (PNG through matplotlib or PIL) are
the one kind of image file written where it is made.

Every reader raises :class:`ReadError` (a ValueError with ``path`` and ``reason``) for missing,
unreadable, corrupt or truncated files. Frames: 2D arrays are row-major as stored; volumes are canonical
RAS+ (X, Y, Z) arrays (:class:`Volume`); display slices follow :mod:`medground.io.display`. A build's
region masks (a PNG file or COCO RLE in the record) are read by :func:`region_mask` and RLE is made and
read by :func:`encode_rle` / :func:`decode_rle` (:mod:`medground.io.masks`).
"""

from medground.io.atomic import (
    atomic_output,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    fsync_path,
)
from medground.io.dicom import dicom_series_info, load_dicom_seg, load_dicom_series
from medground.io.display import (
    AXES,
    CT_WINDOWS,
    DEFAULT_CT_WINDOW,
    axis_length,
    ct_window,
    display_volume,
    mr_percentiles,
    normalize_mr,
    rescale_to_uint8,
    slice_spacing,
    slice_volume,
    stack_slices,
    window_ct,
)
from medground.io.errors import ReadError
from medground.io.images import (
    IMAGE_SUFFIXES,
    MASK_FILE_SUFFIXES,
    MaskFile,
    StoredImage,
    check_png_stream,
    copy_image,
    encode_mask_png,
    encode_png,
    image_array,
    image_size,
    mask_array,
    read_image,
    read_image_as_stored,
    read_mask,
    read_mask_file,
    strip_image_metadata,
    to_uint8_minmax,
    write_mask_png,
    write_png,
)
from medground.io.masks import MASK_FORMATS, decode_rle, encode_rle, region_mask, rle_counts
from medground.io.nifti import (
    Volume,
    canonical_volume,
    load_label_volume,
    load_volume,
    to_original_order,
    write_nifti_like,
)
from medground.io.polygons import fill_polygon
from medground.io.rtstruct import rasterize_rtstruct

__all__ = [
    "AXES",
    "CT_WINDOWS",
    "DEFAULT_CT_WINDOW",
    "IMAGE_SUFFIXES",
    "MASK_FILE_SUFFIXES",
    "MASK_FORMATS",
    "MaskFile",
    "ReadError",
    "StoredImage",
    "Volume",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "axis_length",
    "canonical_volume",
    "check_png_stream",
    "copy_image",
    "ct_window",
    "decode_rle",
    "dicom_series_info",
    "display_volume",
    "encode_mask_png",
    "encode_png",
    "encode_rle",
    "fill_polygon",
    "fsync_path",
    "image_size",
    "load_dicom_seg",
    "load_dicom_series",
    "load_label_volume",
    "load_volume",
    "mr_percentiles",
    "normalize_mr",
    "rasterize_rtstruct",
    "read_image",
    "read_image_as_stored",
    "image_array",
    "mask_array",
    "read_mask",
    "read_mask_file",
    "strip_image_metadata",
    "region_mask",
    "rle_counts",
    "rescale_to_uint8",
    "slice_spacing",
    "slice_volume",
    "stack_slices",
    "to_original_order",
    "to_uint8_minmax",
    "window_ct",
    "write_nifti_like",
    "write_mask_png",
    "write_png",
]
