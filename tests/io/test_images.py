"""Tests of medground.io.images on real medseg files and tiny synthetic ones."""

from __future__ import annotations

import csv
import pickle
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from medground.io import ReadError, image_size, read_image, read_mask, read_mask_file, write_png


def _png_chunk_types(raw: bytes) -> list[str]:
    """Independent PNG chunk walker: the chunk type names in file order."""
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    types, pos = [], 8
    while pos < len(raw):
        (length,) = struct.unpack(">I", raw[pos : pos + 4])
        types.append(raw[pos + 4 : pos + 8].decode("ascii"))
        pos += 12 + length
    return types


def _pil(path):
    """Independent read with Pillow: (mode, array as stored); the file is closed."""
    with Image.open(path) as image:
        return image.mode, np.array(image)


# ---- read_image on real files -------------------------------------------------------------------


def test_read_image_grey_png(data):
    path = data("medseg", "brats2021_flair_mr", "images", "BraTS2021_01646_z076.png")
    image = read_image(path)
    assert image.shape == (160, 160) and image.dtype == np.uint8
    assert np.array_equal(image, _pil(path)[1])


def test_read_image_rgba_drops_alpha(data):
    path = data("medseg", "cpm15_nuclei_histopathology", "images", "image03.png")
    rgba = _pil(path)[1]
    assert rgba.shape[2] == 4
    image = read_image(path)
    assert image.shape == rgba.shape[:2] + (3,) and image.dtype == np.uint8
    assert np.array_equal(image, rgba[..., :3])


def test_read_image_tiff_and_jpeg(data):
    tiff = read_image(data("medseg", "drive_fundus", "images", "28_training.tif"))
    assert tiff.shape == (584, 565, 3) and tiff.dtype == np.uint8
    jpeg = read_image(data("medseg", "covid19_medseg_ct", "images", "69.jpg"))
    assert jpeg.ndim == 2 and jpeg.dtype == np.uint8
    rgb_jpeg = read_image(data("medseg", "kvasir_seg_endoscopy", "images", "cju0roawvklrq0799vmjorwfv.jpg"))
    assert rgb_jpeg.ndim == 3 and rgb_jpeg.shape[2] == 3


def test_read_image_rgb_with_equal_channels_stays_rgb(data):
    # SA-Med2D slices are grey values saved as RGB: the rule follows the file mode, not the values.
    image = read_image(data("medseg", "sa_med2d_demo_ct", "images", "s0114_111.png"))
    assert image.ndim == 3 and image.shape[2] == 3


def test_image_size_matches_manifest(data):
    assert image_size(data("medseg", "dc1000_dental_xray", "images", "1009.png")) == (2943, 1435)
    assert image_size(data("medseg", "hc18_fetal_ultrasound", "images", "018_HC.png")) == (800, 540)


# ---- read_image on synthetic files --------------------------------------------------------------


def test_read_image_16bit_minmax(tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(np.array([[1000, 2000, 3000]], dtype=np.uint16)).save(path)
    # (v - 1000) / 2000 * 255: 0, 127.5 -> 128 (half up), 255
    assert read_image(path).tolist() == [[0, 128, 255]]


def test_read_image_constant_16bit_gives_zeros(tmp_path):
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((2, 3), 700, dtype=np.uint16)).save(path)
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (2, 3) and not image.any()


def test_read_image_float_tiff(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[-1.0, 0.0, 3.0]], dtype=np.float32)).save(path)
    # (v + 1) / 4 * 255: 0, 63.75 -> 64, 255
    assert read_image(path).tolist() == [[0, 64, 255]]


def test_read_image_palette_la_and_1bit(tmp_path):
    pal = Image.fromarray(np.array([[0, 1], [2, 1]], dtype=np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    pal.save(tmp_path / "pal.png")
    rgb = read_image(tmp_path / "pal.png")
    assert rgb.shape == (2, 2, 3)
    assert rgb[0, 1].tolist() == [255, 0, 0] and rgb[1, 0].tolist() == [0, 255, 0]

    la = Image.fromarray(np.dstack([np.array([[5, 6]], np.uint8), np.array([[0, 255]], np.uint8)]), mode="LA")
    la.save(tmp_path / "la.png")
    assert read_image(tmp_path / "la.png").tolist() == [[5, 6]]

    Image.fromarray(np.array([[True, False]])).convert("1").save(tmp_path / "bits.png")
    assert read_image(tmp_path / "bits.png").tolist() == [[255, 0]]
    assert read_mask(tmp_path / "bits.png").tolist() == [[1, 0]]


def test_read_image_bmp(tmp_path):
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    Image.fromarray(rgb).save(tmp_path / "x.bmp")
    assert np.array_equal(read_image(tmp_path / "x.bmp"), rgb)


# ---- read_mask ---------------------------------------------------------------------------------


def test_read_mask_16bit_instances_match_manifest(data):
    folder = data("medseg", "cpm15_nuclei_histopathology")
    total = 0
    with open(folder / "pairs.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            mask = read_mask(folder / row["mask"])
            assert mask.ndim == 2 and mask.dtype == np.uint16
            ids = np.unique(mask)
            assert int(row["n_nuclei"]) == ids.size - 1
            total += ids.size - 1
    assert total == 1625  # MANIFEST: 8 instance maps, 1,625 nuclei


def test_read_mask_palette_gives_indices(data):
    folder = data("medseg", "covid19_medseg_ct")
    labels = read_mask(folder / "masks_original" / "GT" / "18.png")
    assert labels.dtype == np.uint8 and set(np.unique(labels).tolist()) <= {0, 1, 2}
    ggo = _pil(folder / "masks" / "18_ground_glass_opacity.png")[1]
    con = _pil(folder / "masks" / "18_consolidation.png")[1]
    assert np.array_equal(labels == 1, ggo > 0)
    assert np.array_equal(labels == 2, con > 0)


def test_read_mask_binary_png(data):
    mask = read_mask(data("medseg", "kvasir_seg_endoscopy", "masks", "cju0qx73cjw570799j4n5cjze.png"))
    assert mask.dtype == np.uint8 and set(np.unique(mask).tolist()) == {0, 255}


def test_read_mask_rgb_equal_channels_gives_one_channel(tmp_path):
    grey = np.array([[0, 3], [7, 0]], dtype=np.uint8)
    Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 255)])).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png")
    assert mask.shape == (2, 2) and mask.tolist() == grey.tolist()


def test_read_mask_rgb_differing_channels_raises(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    path = tmp_path / "colour.png"
    Image.fromarray(rgb).save(path)
    with pytest.raises(ReadError, match="label map") as info:
        read_mask(path)
    assert info.value.path == str(path)


# ---- read_mask_file: any mask file, in a frame a pair can share ----------------------------------


def test_read_mask_file_rgba_ignores_alpha(tmp_path):
    values = np.array([[0, 255], [255, 0]], np.uint8)
    opaque = np.full((2, 2), 255, np.uint8)
    Image.fromarray(np.dstack([values, values, values, opaque]), mode="RGBA").save(tmp_path / "m.png")
    mask = read_mask_file(tmp_path / "m.png")
    assert mask.array.tolist() == [[0, 255], [255, 0]]
    assert mask.frame == "stored" and mask.spacing is None and mask.affine is None


def test_read_mask_file_2d_nifti_gives_display_slice(tmp_path):
    import nibabel as nib

    # stored (X=3, Y=2), RAS affine: display D[r, c] = a[X-1-c, Y-1-r], worked out by hand below
    stored = np.array([[1, 2], [3, 4], [5, 6]], np.int16)
    nib.save(nib.Nifti1Image(stored, np.diag([0.5, 2.0, 1.0, 1.0])), tmp_path / "m.nii.gz")
    mask = read_mask_file(tmp_path / "m.nii.gz")
    # row 0 = y index 1 (anterior at the top), columns x = 2, 1, 0 (patient right on the image's left)
    assert mask.array.tolist() == [[6, 4, 2], [5, 3, 1]]
    assert mask.frame == "display" and mask.spacing == pytest.approx((2.0, 0.5))


def test_read_mask_file_3d_nifti_and_npy(tmp_path):
    import nibabel as nib

    labels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    nib.save(nib.Nifti1Image(labels, np.diag([1.0, 1.0, 3.0, 1.0])), tmp_path / "v.nii")
    volume = read_mask_file(tmp_path / "v.nii")
    assert volume.frame == "ras" and volume.array.tolist() == labels.tolist()
    assert volume.spacing == pytest.approx((1.0, 1.0, 3.0)) and volume.affine[2, 2] == 3.0
    np.save(tmp_path / "a.npy", labels[0])
    assert read_mask_file(tmp_path / "a.npy").array.tolist() == labels[0].tolist()


def test_read_mask_file_bad_inputs_name_the_file(tmp_path):
    import nibabel as nib

    np.save(tmp_path / "f.npy", np.full((2, 2), 0.5))
    nib.save(nib.Nifti1Image(np.full((2, 2, 2), 0.5, np.float32), np.eye(4)), tmp_path / "p.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.uint8), np.eye(4)), tmp_path / "t.nii.gz")
    (tmp_path / "m.txt").write_text("0 1\n")
    for name, reason in [
        ("f.npy", "integer or bool"),
        ("p.nii.gz", "non-integer"),
        ("t.nii.gz", "2D or 3D"),
        ("m.txt", "unknown mask format"),
    ]:
        with pytest.raises(ReadError, match=reason) as info:
            read_mask_file(tmp_path / name)
        assert info.value.path == str(tmp_path / name)


# ---- bad inputs --------------------------------------------------------------------------------


def test_truncated_png_raises(data, tmp_path):
    raw = data("medseg", "hc18_fetal_ultrasound", "images", "018_HC.png").read_bytes()
    path = tmp_path / "half.png"
    path.write_bytes(raw[: len(raw) // 2])
    for reader in (read_image, read_mask):
        with pytest.raises(ReadError, match="truncated or corrupt") as info:
            reader(path)
        assert str(info.value).startswith(f"{path}: ")


def test_text_file_named_png_raises(tmp_path):
    path = tmp_path / "note.png"
    path.write_text("not an image\n")
    for reader in (read_image, read_mask, image_size):
        with pytest.raises(ReadError, match="not a readable image"):
            reader(path)


def test_missing_path_and_folder_raise(tmp_path):
    with pytest.raises(ReadError, match="not found"):
        read_image(tmp_path / "nope.png")
    folder = tmp_path / "dir.png"
    folder.mkdir()
    with pytest.raises(ReadError, match="folder"):
        read_mask(folder)


def test_unknown_suffix_lists_supported(tmp_path):
    path = tmp_path / "x.gif"
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(path)
    with pytest.raises(ReadError, match=r"\.png.*\.tiff"):
        read_image(path)


def test_read_error_is_value_error_and_pickles():
    err = ReadError("/a/b.png", "file not found")
    assert isinstance(err, ValueError) and str(err) == "/a/b.png: file not found"
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.reason, str(back)) == (err.path, err.reason, str(err))


# ---- write_png ---------------------------------------------------------------------------------


def test_write_png_bool_and_parents(tmp_path):
    path = tmp_path / "a" / "b" / "mask.png"
    write_png(path, np.array([[True, False], [False, True]]))
    mode, stored = _pil(path)
    assert mode == "L"
    assert stored.tolist() == [[255, 0], [0, 255]]
    assert sorted(p.name for p in path.parent.iterdir()) == ["mask.png"]  # no temp file left


def test_write_png_uint16_kept(tmp_path):
    array = np.array([[0, 300], [65535, 7]], dtype=np.uint16)
    write_png(tmp_path / "ids.png", array)
    assert _pil(tmp_path / "ids.png")[0].startswith("I;16")
    back = read_mask(tmp_path / "ids.png")
    assert back.dtype == np.uint16 and np.array_equal(back, array)


def test_write_png_rgb_roundtrip_and_deterministic(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    write_png(tmp_path / "one.png", rgb)
    write_png(tmp_path / "two.png", rgb.copy())
    raw = (tmp_path / "one.png").read_bytes()
    assert raw == (tmp_path / "two.png").read_bytes()
    assert _png_chunk_types(raw) == ["IHDR", "IDAT", "IEND"]  # no time stamp or text metadata
    assert np.array_equal(read_image(tmp_path / "one.png"), rgb)
    (ihdr_len,) = struct.unpack(">I", raw[8:12])
    assert zlib.crc32(raw[12 : 16 + ihdr_len]) == struct.unpack(">I", raw[16 + ihdr_len : 20 + ihdr_len])[0]


def test_write_png_rejects_bad_dtype_and_suffix(tmp_path):
    with pytest.raises(ValueError, match="dtype float64"):
        write_png(tmp_path / "f.png", np.zeros((2, 2)))
    with pytest.raises(ValueError, match="suffix"):
        write_png(tmp_path / "f.jpg", np.zeros((2, 2), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_multi_page_tiff_raises(tmp_path):
    pages = [Image.fromarray(np.full((2, 2), v, np.uint8)) for v in (1, 2)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(ReadError, match="2 frames"):
        read_image(tmp_path / "stack.tif")


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(kind, body) of each chunk, parsed by hand."""
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def _png_from_chunks(chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = b"\x89PNG\r\n\x1a\n"
    for kind, body in chunks:
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return out


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_stored_png_is_checked_not_decoded_and_decodes_like_read_image(tmp_path, mode):
    from medground.io import StoredImage, read_image_as_stored

    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(13, 17) if mode == "L" else (13, 17, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(array).save(path)
    stored, as_stored = read_image_as_stored(path)
    assert as_stored and isinstance(stored, StoredImage)
    assert stored.shape == array.shape and stored.dtype == np.uint8 and stored.ndim == array.ndim
    assert stored._pixels is None  # nothing decoded yet
    np.testing.assert_array_equal(np.asarray(stored), array)
    np.testing.assert_array_equal(np.asarray(stored), read_image(path))


def test_png_check_refuses_truncation_bad_crc_and_bad_pixel_streams(tmp_path):
    from medground.io import check_png_stream, read_image_as_stored

    path = tmp_path / "a.png"
    Image.fromarray(np.arange(400, dtype=np.uint8).reshape(20, 20)).save(path)
    good = path.read_bytes()
    check_png_stream(path)
    chunks = _png_chunks(good)
    idat = next(i for i, (kind, _) in enumerate(chunks) if kind == b"IDAT")
    cases = {
        "truncated": good[: len(good) - 20],
        "CRC": good[:-17] + bytes([good[-17] ^ 0xFF]) + good[-16:],  # last IDAT byte (IDAT CRC, IEND follow)
        # a valid CRC over a pixel stream that is not deflate data
        "decompress": _png_from_chunks([*chunks[:idat], (b"IDAT", b"\x00" * 30), *chunks[idat + 1 :]]),
        # valid deflate data of the wrong length (one row missing), CRC recomputed
        "header implies": _png_from_chunks(
            [*chunks[:idat], (b"IDAT", zlib.compress(bytes(19 * 21))), *chunks[idat + 1 :]]
        ),
    }
    for reason, data in cases.items():
        path.write_bytes(data)
        with pytest.raises(ReadError, match=reason):
            read_image_as_stored(path)
