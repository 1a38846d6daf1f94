"""64-bit perceptual hash (`imagehash.phash`) of what a person sees of an image.

What is hashed: the image composited over an opaque grey (`BACKGROUND`), as luminance.
Transparency is part of the picture: GNOME's symbolic icons are black RGB everywhere, the
shape lives only in alpha, and dropping alpha (RGBA -> RGB) made hundreds of different
icons hash alike (issue 18). Over a light grey, a black shape and a white shape both stay
visible (a white background would erase white-on-transparent icons, a black one
black-on-transparent ones).

The hash is `imagehash.phash` (32x32 LANCZOS thumbnail, 2-D DCT-II, the 8x8 lowest
frequencies compared with their median). `phash_image` computes exactly that: the same
Pillow resize and the same scipy DCT calls, without imagehash's per-call object overhead;
`tests/pipelines/test_phash.py` checks it bit for bit against `imagehash.phash` on the
Adwaita icon set and generated images. The dedup index stores these hashes under
`PHASH_ALGORITHM`: an index built with another algorithm is rebuilt, never compared.
"""

from __future__ import annotations

import numpy as np

HASH_SIZE = 8
IMG_SIZE = 32  # HASH_SIZE * 4, imagehash's default highfreq_factor
BACKGROUND = 192  # grey level transparent pixels are composited over
# the name stored in dedup index params: change it whenever a hash value would change
PHASH_ALGORITHM = f"imagehash-phash-{HASH_SIZE}x{HASH_SIZE}-over-grey{BACKGROUND}-v2"

_BITS = np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64)


def visible_gray(img):
    """The image as a person sees it over the fixed grey background, in mode "L"."""
    from PIL import Image

    if img.mode == "L":
        return img
    has_alpha = "A" in img.getbands() or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (BACKGROUND, BACKGROUND, BACKGROUND, 255))
        img = Image.alpha_composite(bg, rgba)
    return img.convert("L")


def thumbnail(img):
    """The 32x32 grayscale thumbnail `imagehash.phash` hashes (of the composited image)."""
    from PIL import Image

    gray = visible_gray(img)
    return gray.resize((IMG_SIZE, IMG_SIZE), Image.Resampling.LANCZOS)


def phash_thumbnail(thumb) -> int:
    """pHash of a 32x32 mode-"L" thumbnail as an unsigned 64-bit int (the bits of
    `imagehash.phash`, row-major, first bit most significant)."""
    import scipy.fftpack

    pixels = np.asarray(thumb)
    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)
    low = dct[:HASH_SIZE, :HASH_SIZE]
    # np.median's value (the mean of the two middle elements, (a + b) / 2, the same
    # floats), without its Python-level overhead (it costs more than both DCTs)
    s = np.sort(low, axis=None)
    mid = HASH_SIZE * HASH_SIZE // 2
    bits = (low > (s[mid - 1] + s[mid]) / 2).ravel()
    return int(np.bitwise_or.reduce(_BITS[bits])) if bits.any() else 0


def phash_image(img) -> int:
    """`int(str(imagehash.phash(visible_gray(img))), 16)`, faster."""
    return phash_thumbnail(thumbnail(img))


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray | int:
    """Hamming distance between 64-bit hashes (vectorized over numpy uint64 arrays)."""
    from .lsh import popcount64

    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    d = popcount64(x)
    return int(d) if np.ndim(d) == 0 else d
