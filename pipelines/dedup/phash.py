"""64-bit perceptual hash (DCT pHash) computed from a small grayscale image.

Same construction as `imagehash.phash` (32x32 grayscale, 2-D DCT-II, top-left 8x8
coefficients compared with their median), but fast: the caller decodes small (JPEG draft
mode, `Image.reduce`), the 32x32 resize is Pillow's, and the DCT is two 32x32 matrix
products with a precomputed basis instead of scipy calls per image.
"""

from __future__ import annotations

import numpy as np

HASH_SIZE = 8
IMG_SIZE = 32  # HASH_SIZE * 4, as imagehash's default highfreq_factor


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    return (m * 2.0).astype(np.float64)  # scipy's unnormalized DCT-II scale (2x)


_DCT = _dct_matrix(IMG_SIZE)[:HASH_SIZE]  # only the 8 lowest frequencies are needed
_BITS = np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64)


def phash_pixels(gray32: np.ndarray) -> int:
    """pHash of a 32x32 grayscale array (any numeric dtype) as an unsigned 64-bit int."""
    a = np.asarray(gray32, dtype=np.float64)
    low = _DCT @ a @ _DCT.T  # (8x32)(32x32)(32x8): the 8x8 low-frequency block
    flat = low.ravel()
    s = np.sort(flat)  # np.median's Python-level overhead costs more than the whole DCT here
    bits = flat > (s[31] + s[32]) * 0.5
    return int(np.bitwise_or.reduce(_BITS[bits])) if bits.any() else 0


def small_gray(img, size: int = IMG_SIZE):
    """A size x size grayscale copy of a decoded PIL image (reduce first: cheap and accurate)."""
    from PIL import Image

    if img.mode not in ("L", "RGB"):
        img = (
            img.convert("RGBA").convert("RGB")
            if "A" in img.getbands() or img.mode == "P"
            else img.convert("RGB")
        )
    factor = min(img.width // (size * 2), img.height // (size * 2))
    if factor >= 2:
        img = img.reduce(factor)
    if img.mode != "L":
        img = img.convert("L")
    return img.resize((size, size), Image.Resampling.BILINEAR)


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray | int:
    """Hamming distance between 64-bit hashes (vectorized over numpy uint64 arrays)."""
    from .lsh import popcount64

    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    d = popcount64(x)
    return int(d) if np.ndim(d) == 0 else d
