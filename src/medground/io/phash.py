"""Perceptual image hashes that survive copies, JPEG re-encodes, resizes and small crops.

Pure array functions (they read no files): what ``medground check-splits`` uses to find one picture
saved twice under other names. Two stages:

1. :func:`window_hashes`: a 64-bit DCT hash (the classic pHash: 32x32 grey, low 8x8 DCT coefficients
   against their median) of the whole image and of every sub-window left after cutting 0, 4, 8 or 12%
   from each of its four sides (256 windows). A crop of up to ~10% per side of image A then has a full-
   frame hash within a few bits of one of A's window hashes; resizes and re-encodes barely move it.
2. :func:`match_score`: the hash alone also pairs different pictures of one kind (fundus photographs
   of the same eye side differ by 6-8 bits), so a candidate pair is verified on pixels: the matching
   window is refined (coordinate ascent on smoothed normalised cross-correlation, NCC), then the median
   NCC over a grid of patches of the two high-passed pictures (detail such as vessels and texture, not
   the overall layout, matching everywhere in the picture) decides.

Frames: windows are ``(x0, y0, x1, y1)`` fractions of the image's width and height (0..1), so they
mean the same region at any resolution; arrays are ``(H, W)`` grey or ``(H, W, C)`` colour uint8.
"""

from __future__ import annotations

import itertools

import numpy as np
from PIL import Image
from scipy.fft import dctn
from scipy.ndimage import gaussian_filter, minimum_filter

__all__ = [
    "CANDIDATE_BITS",
    "INDEX_WINDOWS",
    "MATCH_SCORE",
    "ORIENTATIONS",
    "WINDOWS",
    "best_windows",
    "compare",
    "decode_hashes",
    "encode_hashes",
    "hamming",
    "match_score",
    "near_pairs",
    "orient",
    "stored_hashes",
    "window_hashes",
]

_CUTS = (0.0, 0.04, 0.08, 0.12)
# Every (x0, y0, x1, y1) left by cutting one of _CUTS from each side; WINDOWS[0] is the whole image.
WINDOWS: tuple[tuple[float, float, float, float], ...] = tuple(
    (left, top, 1.0 - right, 1.0 - bottom) for left, top, right, bottom in itertools.product(_CUTS, repeat=4)
)
# A pair is a candidate when one full-frame hash is this close (in bits of 64) to a window of the other.
# Measured on the shared collection (bench/bench_check_splits.py): made copies (re-encodes, resizes,
# crops up to 10% per side, all at once) land at <= 8 bits, distinct pictures at >= 6.
CANDIDATE_BITS = 10
# A candidate is the same picture when the median of the aligned high-pass patch NCCs reaches this.
# Measured on the shared collection (bench/bench_check_splits.py): distinct pictures, within a dataset
# (different patients' chest X-rays) and across datasets, score <= 0.18; made copies >= 0.53 (most >= 0.8).
MATCH_SCORE = 0.4

# The 8 orientations of a picture (rotations by 0/90/180/270 degrees counter-clockwise, then the same
# mirrored left-right): volume slices are shown radiologically and 2D collections in either convention,
# so a copy may be mirrored or turned. ORIENTATIONS[k] is what :func:`orient` does for k.
ORIENTATIONS: tuple[str, ...] = ("0", "90", "180", "270", "mirror", "mirror 90", "mirror 180", "mirror 270")
# The windows whose hashes are stored and indexed (:func:`stored_hashes`): every cut of 0, 5 or 10% per
# side (81, the whole frame first); a crop of up to ~12% per side is within 2.5% of one on every side.
INDEX_WINDOWS: tuple[tuple[float, float, float, float], ...] = tuple(
    (left, top, 1.0 - right, 1.0 - bottom)
    for left, top, right, bottom in itertools.product((0.0, 0.05, 0.10), repeat=4)
)

_HASH_SIDE = 256  # the grey image every window hash is cut from
_VERIFY_SIDE = 512  # longest side of the grey image the verification samples from
_MAX_S, _MIN_S = 128, 16  # side of the square samples compared in verification


def _grey(array: np.ndarray) -> Image.Image:
    """``(H, W)`` or ``(H, W, C)`` uint8 -> a float ('F') PIL image of the luma (ITU-R 601 weights)."""
    values = np.asarray(array)
    if values.ndim == 3:
        values = values[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    elif values.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {values.shape}")
    return Image.fromarray(values.astype(np.float32), mode="F")


def _hash(grey: Image.Image, box: tuple[float, float, float, float]) -> int:
    side = grey.size[0]
    return _dct_hash(
        np.asarray(grey.resize((32, 32), Image.Resampling.BOX, box=tuple(side * v for v in box)))
    )


def window_hashes(array: np.ndarray) -> np.ndarray:
    """The 64-bit hash of each of :data:`WINDOWS` of an image: ``(len(WINDOWS),)`` uint64."""
    grey = _grey(array).resize((_HASH_SIDE, _HASH_SIDE), Image.Resampling.BOX)
    return np.array([_hash(grey, box) for box in WINDOWS], dtype=np.uint64)


def orient(array: np.ndarray, k: int) -> np.ndarray:
    """The picture in orientation ``k`` of :data:`ORIENTATIONS`: ``k % 4`` quarter turns counter-clockwise
    of the picture, mirrored left-right first when ``k >= 4``. ``(H, W[, C])`` in, same layout out."""
    turned = np.fliplr(array) if k >= 4 else array
    return np.rot90(turned, k % 4)


def _dct_hash(pixels: np.ndarray) -> int:
    low = dctn(np.asarray(pixels, dtype=np.float64), norm="ortho")[:8, :8]
    return int(np.packbits((low > np.median(low)).ravel()).view(">u8")[0])


def stored_hashes(array: np.ndarray) -> np.ndarray:
    """What a build stores per image for ``check-splits``: ``(8 + len(INDEX_WINDOWS),)`` uint64.

    The first 8 are the whole picture's hash in each of :data:`ORIENTATIONS` (the hash of
    ``orient(array, k)``), the rest the hashes of :data:`INDEX_WINDOWS` in the picture's own orientation
    (the first of them is the whole frame again). A copy B of A, turned, mirrored, re-encoded, resized or
    cropped by up to ~10% per side, has one of its orientation hashes within a few bits of one of A's
    window hashes (:func:`near_pairs` finds them)."""
    grey = _grey(array).resize((_HASH_SIDE, _HASH_SIDE), Image.Resampling.BOX)
    small = np.asarray(grey.resize((32, 32), Image.Resampling.BOX), dtype=np.float64)
    turned = [_dct_hash(orient(small, k)) for k in range(len(ORIENTATIONS))]
    windows = [_hash(grey, box) for box in INDEX_WINDOWS]
    return np.array(turned + windows, dtype=np.uint64)


def encode_hashes(hashes: np.ndarray) -> str:
    """A record's ``"phash"`` field: :func:`stored_hashes` as one hex string (16 digits per hash)."""
    return np.asarray(hashes, dtype=">u8").tobytes().hex()


def decode_hashes(text: str) -> np.ndarray:
    """The uint64 hashes of a ``"phash"`` field; ValueError when it is not one."""
    raw = bytes.fromhex(text)
    if len(raw) != 8 * (len(ORIENTATIONS) + len(INDEX_WINDOWS)):
        raise ValueError(
            f"a phash field holds {len(ORIENTATIONS) + len(INDEX_WINDOWS)} hashes of 16 hex digits, got {len(text)} digits"
        )
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64)


def near_pairs(
    stored: np.ndarray, bits: int = CANDIDATE_BITS, chunks: int = 4, budget: int = 1 << 22
) -> np.ndarray:
    """Pairs of images whose stored hashes say they may be one picture: ``(P, 3)`` int64 rows
    ``(i, j, k)`` with ``i != j``, sorted: a window hash of image i is within ``bits`` of the hash of
    image j in orientation k (``j`` turned/mirrored by ``ORIENTATIONS[k]`` and maybe cropped is a view
    of ``i``).

    ``stored``: ``(N, 8 + len(INDEX_WINDOWS))`` rows of :func:`stored_hashes`. Multi-index hashing
    instead of comparing all pairs: the 64 bits are cut into ``chunks`` pieces; each image's orientation
    hashes are sorted by each piece, and each window hash looks up the orientation hashes that share a
    piece exactly, then the full distance is checked. Two hashes within ``bits`` share a piece whenever
    ``bits < chunks`` and usually beyond (a copy has several windows close to it); the recall on made
    copies is measured in bench/bench_check_splits.py. Memory: the sorted pieces (N x 8 per chunk), the
    pairs found, and at most ``budget`` looked-up matches at a time.
    """
    count, turns = stored.shape[0], len(ORIENTATIONS)
    turned = stored[:, :turns].reshape(-1)  # row r = image r // 8, orientation r % 8
    windows = stored[:, turns:].reshape(-1)  # row r = image r // per_image
    per_image = stored.shape[1] - turns
    width = 64 // chunks
    mask = np.uint64((1 << width) - 1)
    found = np.zeros(0, dtype=np.int64)  # pair codes (i * count + j) * 8 + k
    for piece in range(chunks):
        shift = np.uint64(64 - width * (piece + 1))
        keys = (turned >> shift) & mask
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        query_keys = (windows >> shift) & mask
        low = np.searchsorted(sorted_keys, query_keys, side="left")
        sizes = np.searchsorted(sorted_keys, query_keys, side="right") - low
        ends = np.cumsum(sizes)
        codes = []
        start = 0
        while start < len(windows):  # query slices of at most `budget` matches (one query may exceed it)
            stop = max(
                start + 1, int(np.searchsorted(ends, ends[start] - sizes[start] + budget, side="right"))
            )
            part = sizes[start:stop]
            rows = np.repeat(np.arange(start, stop), part)
            offsets = np.arange(int(part.sum())) - np.repeat(np.cumsum(part) - part, part)
            matches = order[np.repeat(low[start:stop], part) + offsets]
            close = hamming(windows[rows], turned[matches]) <= bits
            rows, matches = rows[close] // per_image, matches[close]
            other = matches // turns
            keep = rows != other
            codes.append((rows[keep] * count + other[keep]) * turns + matches[keep] % turns)
            start = stop
        found = np.unique(np.concatenate([found, *codes]))
    pairs = np.stack((found // turns // count, found // turns % count, found % turns), axis=1)
    return pairs.astype(np.int64)


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bitwise Hamming distance of uint64 hashes, broadcast like ``a ^ b``."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64)))


def best_windows(
    hashes_a: np.ndarray, hashes_b: np.ndarray, count: int = 3
) -> tuple[int, bool, list[tuple[float, float, float, float]]]:
    """How close two images' hashes come, and where: ``(bits, b_is_window_of_a, windows)``.

    Compares each image's full frame with every window of the other and keeps the closer direction;
    ``windows`` are the ``count`` best windows, on A when ``b_is_window_of_a`` else on B.
    """
    to_b, to_a = hamming(hashes_a[0], hashes_b), hamming(hashes_b[0], hashes_a)
    b_in_a = int(to_a.min()) <= int(to_b.min())
    distances = to_a if b_in_a else to_b
    order = np.argsort(distances, kind="stable")[:count]
    return int(distances.min()), b_in_a, [WINDOWS[int(i)] for i in order]


def _verify_grey(array: np.ndarray) -> tuple[Image.Image, int, int]:
    grey = _grey(array)
    width, height = grey.size
    scale = min(1.0, _VERIFY_SIDE / max(width, height))
    if scale < 1.0:
        grey = grey.resize(
            (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BOX
        )
    return grey, width, height


def _sample(grey: Image.Image, box: tuple[float, ...], side: int) -> np.ndarray:
    width, height = grey.size
    x0, y0, x1, y1 = box
    region = (x0 * width, y0 * height, x1 * width, y1 * height)
    return np.asarray(grey.resize((side, side), Image.Resampling.BOX, box=region), dtype=np.float64)


def _ncc(a: np.ndarray, b: np.ndarray, keep: np.ndarray | None = None) -> float:
    if keep is not None:
        a, b = a[keep], b[keep]
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / norm if norm > 1e-9 else 0.0


def _local_ncc(a: np.ndarray, b: np.ndarray, keep: np.ndarray | None) -> float:
    """Median NCC over a grid of square patches of two aligned ``(side, side)`` samples.

    A copy matches in every part of the picture; two scans of different patients with the same
    anatomy and positioning (two chest X-rays) match only in some parts (spine, clavicles), which a
    global correlation averages into a high score (0.63 measured) but a median of patches does not
    (0.18). Patches mostly off ``keep`` are left out; samples too small for a 2 x 2 grid of 16-pixel
    patches fall back to the global NCC.
    """
    grid = min(8, a.shape[0] // 16)
    if grid < 2:
        return _ncc(a, b, keep)
    step = a.shape[0] // grid
    scores = []
    for row, col in itertools.product(range(grid), repeat=2):
        part = (slice(row * step, (row + 1) * step), slice(col * step, (col + 1) * step))
        inside = None if keep is None else keep[part]
        if inside is None or inside.mean() >= 0.5:
            scores.append(_ncc(a[part], b[part], inside))
    return float(np.median(scores)) if scores else _ncc(a, b, keep)


def _content(sample: np.ndarray) -> np.ndarray:
    """Pixels away from a dark background (e.g. outside a fundus disc), whose rim would match any disc."""
    return minimum_filter(sample, size=5) > 0.08 * max(float(np.percentile(sample, 99)), 1e-6)


def _align(grey: Image.Image, target: np.ndarray, box: tuple[float, ...], side: int) -> tuple[float, ...]:
    """Move the four edges of ``box`` on ``grey`` until its sample best correlates with ``target``."""
    sigma = side / 32
    smooth_target = gaussian_filter(target, sigma)

    def fit(candidate: list[float]) -> float:
        return _ncc(gaussian_filter(_sample(grey, candidate, side), sigma), smooth_target)

    current, best, step = list(box), fit(list(box)), 0.02
    while step > 0.002:
        improved = True
        while improved:
            improved = False
            for edge, delta in itertools.product(range(4), (-step, step)):
                candidate = current.copy()
                candidate[edge] = min(1.0, max(0.0, candidate[edge] + delta))
                if candidate[2] - candidate[0] < 0.5 or candidate[3] - candidate[1] < 0.5:
                    continue
                value = fit(candidate)
                if value > best:
                    best, current, improved = value, candidate, True
        step /= 2
    return tuple(current)


def match_score(
    outer: np.ndarray, inner: np.ndarray, windows: list[tuple[float, float, float, float]]
) -> tuple[float, tuple[float, ...]]:
    """How surely ``inner`` is a window of ``outer`` (a copy, re-encode, resize or crop of it).

    ``windows`` are starting guesses on ``outer`` (from :func:`best_windows`). Both pictures are sampled
    square at the lower of their native resolutions (16..128 px), the window is aligned, and the
    median patch NCC of the high-passed samples (-1..1; :func:`_local_ncc`) over pixels off a dark
    background is returned with the aligned window.
    Same picture: >= :data:`MATCH_SCORE`.
    """
    grey_outer, width_outer, height_outer = _verify_grey(outer)
    grey_inner, width_inner, height_inner = _verify_grey(inner)
    best: tuple[float, tuple[float, ...]] = (-1.0, windows[0])
    for window in windows:
        native = min(
            (window[2] - window[0]) * width_outer,
            (window[3] - window[1]) * height_outer,
            width_inner,
            height_inner,
        )
        side = int(np.clip(native, _MIN_S, _MAX_S))
        target = _sample(grey_inner, (0.0, 0.0, 1.0, 1.0), side)
        aligned = _align(grey_outer, target, window, side)
        found = _sample(grey_outer, aligned, side)
        sigma = max(1.0, side / 64)
        detail_found, detail_target = (
            found - gaussian_filter(found, sigma),
            target - gaussian_filter(target, sigma),
        )
        keep = _content(found) & _content(target)
        score = _local_ncc(detail_found, detail_target, keep if keep.mean() >= 0.2 else None)
        if score > best[0]:
            best = (score, aligned)
    return best


def compare(
    array_a: np.ndarray,
    hashes_a: np.ndarray,
    array_b: np.ndarray,
    hashes_b: np.ndarray,
    *,
    candidate: bool = False,
) -> tuple[bool, int, float]:
    """Whether A and B are one picture (either may be a crop of the other): ``(same, bits, score)``.

    ``bits`` is the hash distance of :func:`best_windows`; ``score`` the verified NCC of
    :func:`match_score`, computed only for candidates (``bits <= CANDIDATE_BITS``, or ``candidate``:
    an index such as :func:`near_pairs` already found the pair; else ``nan``).
    """
    bits, b_in_a, windows = best_windows(hashes_a, hashes_b)
    if bits > CANDIDATE_BITS and not candidate:
        return False, bits, float("nan")
    score, _ = match_score(array_a, array_b, windows) if b_in_a else match_score(array_b, array_a, windows)
    return score >= MATCH_SCORE, bits, score
