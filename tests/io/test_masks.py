"""COCO RLE of region masks: byte-level agreement with pycocotools, round trips, hand-computed runs."""

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from medground.io import ReadError, decode_rle, encode_rle, region_mask, rle_counts, write_mask_png


def _asymmetric(height: int, width: int, seed: int) -> np.ndarray:
    """A non-square mask that differs from its transpose and its flips: an L shape plus noise."""
    rng = np.random.default_rng(seed)
    mask = rng.random((height, width)) < 0.2
    mask[2 : height // 2, 1:4] = True  # vertical bar of the L, at the left
    mask[height // 2 - 3 : height // 2, 1 : width - 5] = True  # horizontal bar
    return mask


def _column_major_runs(mask: np.ndarray) -> list[int]:
    """Run lengths over the pixels in column-major order, background first (independent of pycocotools)."""
    runs, value, length = [], False, 0
    for pixel in mask.flatten(order="F").astype(bool):
        if pixel != value:
            runs.append(length)
            value, length = pixel, 0
        length += 1
    return [*runs, length]


def test_tiny_mask_matches_runs_and_string_computed_by_hand():
    # 3 rows x 2 columns; column-major order reads 0,1,0 (column 0) then 1,1,0 (column 1).
    mask = np.array([[0, 1], [1, 1], [0, 0]], dtype=np.uint8)
    rle = encode_rle(mask)
    assert rle["size"] == [3, 2]
    # runs 0:1, 1:1, 0:1, 1:2, 0:1 -> [1, 1, 1, 2, 1]; from the fourth on, stored as the difference to
    # the run two before (2-1=1, 1-1=0), each a single 5-bit group: chr(48 + value) -> "11110".
    assert rle["counts"] == "11110"
    assert rle_counts("11110").tolist() == [1, 1, 1, 2, 1]
    np.testing.assert_array_equal(decode_rle(rle), mask.astype(bool))


def test_multi_group_run_is_coded_low_group_first():
    mask = np.zeros((50, 1), dtype=bool)
    mask[40:] = (
        True  # runs [40, 10]; 40 = 0b1_01000: group 8 with the 'more' bit (8 + 32 = 40 -> 'X'), then 1
    )
    rle = encode_rle(mask)
    assert rle["counts"] == "X1:"  # ':' = chr(48 + 10)
    assert rle_counts(rle["counts"]).tolist() == [40, 10]


@pytest.mark.parametrize(("shape", "seed"), [((37, 53), 0), ((64, 17), 1), ((1, 9), 2), ((120, 91), 3)])
def test_encode_is_byte_identical_to_pycocotools_and_round_trips(shape, seed):
    mask = _asymmetric(*shape, seed) if min(shape) > 8 else np.random.default_rng(seed).random(shape) < 0.5
    ours = encode_rle(mask)
    theirs = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert ours["size"] == [int(v) for v in theirs["size"]] == list(shape)
    assert ours["counts"].encode("ascii") == theirs["counts"]
    assert rle_counts(ours["counts"]).tolist() == _column_major_runs(mask)
    np.testing.assert_array_equal(decode_rle(ours), mask)
    back = coco_mask.decode({"size": ours["size"], "counts": ours["counts"].encode("ascii")})
    np.testing.assert_array_equal(back.astype(bool), mask)


def test_encoding_is_column_major_not_row_major():
    mask = _asymmetric(37, 53, 0)
    assert rle_counts(encode_rle(mask)["counts"]).tolist() != _column_major_runs(mask.T)
    np.testing.assert_array_equal(decode_rle(encode_rle(mask.T)), mask.T)


def test_label_values_count_as_inside_and_empty_and_full_masks_round_trip():
    labels = np.array([[0, 255, 3], [7, 0, 0]], dtype=np.uint8)
    assert encode_rle(labels) == encode_rle(labels > 0)
    for mask in (np.zeros((5, 4), bool), np.ones((5, 4), bool)):
        np.testing.assert_array_equal(decode_rle(encode_rle(mask)), mask)


def test_crop_placed_in_an_image_equals_the_full_image_encoding():
    full = np.zeros((40, 70), dtype=bool)
    full[10:25, 30:41] = _asymmetric(15, 11, 4)[:15, :11]
    crop = full[10:25, 30:41]
    assert encode_rle(crop, top=10, left=30, height=40, width=70) == encode_rle(full)
    with pytest.raises(ValueError, match="does not fit"):
        encode_rle(crop, top=30, left=30, height=40, width=70)


@pytest.mark.parametrize(
    ("top", "left", "rows", "cols"),
    [
        (0, 0, 40, 70),
        (0, 0, 5, 3),
        (35, 62, 5, 8),
        (10, 69, 30, 1),
        (0, 30, 40, 11),
        (39, 0, 1, 70),
        (3, 5, 0, 0),
    ],
)
def test_crops_at_every_edge_encode_like_pycocotools_on_the_whole_image(top, left, rows, cols):
    # the last case touches the right and bottom edges: its last run is ones, and no zero column follows
    crop = np.random.default_rng(top * 100 + left).random((rows, cols)) < 0.6
    if crop.size:
        crop[-1, -1] = True
    full = np.zeros((40, 70), dtype=np.uint8)
    full[top : top + rows, left : left + cols] = crop
    ours = encode_rle(crop, top=top, left=left, height=40, width=70)
    assert ours["counts"].encode("ascii") == coco_mask.encode(np.asfortranarray(full))["counts"]


def test_long_strings_are_read_as_pycocotools_reads_them():
    mask = (
        np.random.default_rng(7).random((300, 211)) < 0.5
    )  # about 24,000 runs; the 40 empty columns give a run over 5 bits
    mask[:, 100:140] = False
    text = encode_rle(mask)["counts"]
    assert len(text) > 20_000
    assert rle_counts(text).tolist() == _column_major_runs(mask)


def test_uncompressed_counts_decode_like_the_string():
    mask = _asymmetric(21, 13, 5)
    uncompressed = {"size": [21, 13], "counts": _column_major_runs(mask)}
    np.testing.assert_array_equal(decode_rle(uncompressed), mask)


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        ({"size": [3, 2], "counts": "11111"}, "cover 7 pixels"),
        ({"size": [3, 2], "counts": "11~"}, "outside"),
        ({"size": [3, 2], "counts": "1X"}, "middle of a number"),
        ({"size": [3], "counts": "6"}, "not \\[height, width\\]"),
        ({"size": [3, 2], "counts": [1, -1, 6]}, "negative"),
        ({"counts": "6"}, "JSON object"),
        ({"size": [3, 2], "counts": 6}, "compressed string or a list"),
        ({"size": [3, 2], "counts": "1" + "X" * 12 + "0"}, "more than 60 bits"),
        # the same faults in strings long enough to be read by the vectorised reader (300 empty runs first)
        ({"size": [3, 2], "counts": "0" * 300 + "11~"}, "outside"),
        ({"size": [3, 2], "counts": "0" * 300 + "1X"}, "middle of a number"),
        ({"size": [3, 2], "counts": "0" * 300 + "1" + "X" * 12 + "0"}, "more than 60 bits"),
        # differences to the run two before: 300 zero runs, then 1, 1, 1+1, 1+1, 1+2 -> 9 pixels
        ({"size": [3, 2], "counts": "0" * 300 + "11111"}, "cover 9 pixels"),
    ],
)
def test_malformed_rle_is_refused_before_decoding(rle, message):
    with pytest.raises(ValueError, match=message):
        decode_rle(rle)


def test_region_mask_reads_png_and_rle_regions_alike(tmp_path):
    mask = _asymmetric(30, 45, 6)
    write_mask_png(tmp_path / "masks" / "a.png", mask)
    from_png = region_mask(tmp_path, {"key": "liver", "mask": "masks/a.png"})
    from_rle = region_mask(tmp_path, {"key": "liver", "rle": encode_rle(mask)})
    np.testing.assert_array_equal(from_png, mask)
    np.testing.assert_array_equal(from_rle, mask)
    assert from_png.dtype == from_rle.dtype == bool


def test_region_mask_errors_name_the_region_and_the_file(tmp_path):
    with pytest.raises(ReadError, match="'liver' has neither"):
        region_mask(tmp_path, {"key": "liver", "box": [0, 0, 1, 1]}, where="records/shard-0.jsonl")
    with pytest.raises(ReadError, match=r"shard-0.jsonl: region 'liver': bad RLE \(RLE counts cover"):
        region_mask(tmp_path, {"key": "liver", "rle": {"size": [2, 2], "counts": "5"}}, "shard-0.jsonl")
    with pytest.raises(ReadError, match="gone.png: file not found"):
        region_mask(tmp_path, {"key": "liver", "mask": "gone.png"})
