"""64-bit perceptual hash (`imagehash.phash`) of what a person sees of an image.

What is hashed: the image composited over an opaque grey (`BACKGROUND`), as luminance.
Transparency is part of the picture: GNOME's symbolic icons are black RGB everywhere, the
shape lives only in alpha, and dropping alpha (RGBA -> RGB) made hundreds of different
icons hash alike (issue 18). Over a light grey, a black shape and a white shape both stay
visible (a white background would erase white-on-transparent icons, a black one
black-on-transparent ones).

High bit depth: a 16-bit, 32-bit int or float image (modes I;16*, I, F) is first mapped to
the 8-bit grey a viewer shows, by the loader's own mapping (`dataversion.pixels.to_8bit`: I;16 >> 8, I clipped to 0..65535 then >> 8, F of 0..1 (or divided by its max)
times 255), so ingest hashes the pixels training is served. Pillow's convert("L") clips
those modes at 255: three different 16-bit pictures hashed as one white square and two were
dropped as near-duplicates (similarity 1.000). 8-bit images are hashed as before, bit for bit.

The hash is `imagehash.phash` (32x32 LANCZOS thumbnail, 2-D DCT-II, the 8x8 lowest
frequencies compared with their median). `phash_image` computes exactly that: the same
Pillow resize and the same scipy DCT calls, without imagehash's per-call object overhead;
`tests/pipelines/test_phash.py` checks it bit for bit against `imagehash.phash` on the
Adwaita icon set and generated images. The dedup index stores these hashes under
`PHASH_ALGORITHM`: an index built with another algorithm is rebuilt, never compared (v3:
the 8-bit mapping of high-bit-depth images; an index of v2 holds their clipped keys).
"""

from __future__ import annotations

import numpy as np

from dataversion.pixels import to_8bit

HASH_SIZE = 8
IMG_SIZE = 32  # HASH_SIZE * 4, imagehash's default highfreq_factor
BACKGROUND = 192  # grey level transparent pixels are composited over
THUMB_SIZE = 8  # the stored thumbnail: THUMB_SIZE x THUMB_SIZE grey levels
THUMB_BYTES = THUMB_SIZE * THUMB_SIZE
# an image's dedup key: uint64 words [pHash, 1 when a thumbnail follows (else 0),
# thumbnail bytes (8 words)]; a key without a thumbnail is compared by the pHash rule
KEY_WORDS = 2 + THUMB_BYTES // 8
# the rule on two thumbnails (see `near_images`), measured on the Adwaita icon set
CANDIDATE_DISTANCE = 8  # average-hash bits: the LSH candidate search (pigeonhole)
MAX_RMS = 7  # root-mean-square grey-level difference, of 255
MAX_DIFF = 20  # largest grey-level difference of one thumbnail pixel, of 255
# the name stored in dedup index params: change it whenever a key or the rule would change
PHASH_ALGORITHM = (
    f"imagehash-phash-{HASH_SIZE}x{HASH_SIZE}-over-grey{BACKGROUND}-v3"
    f"+thumb{THUMB_SIZE}-ahash{CANDIDATE_DISTANCE}-rms{MAX_RMS}-max{MAX_DIFF}"
)

_BITS = np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64)


def visible_gray(img):
    """The image as a person sees it over the fixed grey background, in mode "L" (a
    high-bit-depth image first mapped to 8 bits, `to_8bit`)."""
    from PIL import Image

    img = to_8bit(img)
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


# ---- the thumbnail rule ------------------------------------------------------------------


def thumbnail_bytes(gray) -> bytes:
    """The stored 8x8 thumbnail of a mode-"L" (composited, oriented) image: the LANCZOS
    resize `imagehash.average_hash` hashes, row-major, one byte per grey level."""
    from PIL import Image

    return gray.resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS).tobytes()


def image_keys(phash: np.ndarray, thumbs: list | None = None) -> np.ndarray:
    """uint64 keys [n, KEY_WORDS] of images from their pHashes and thumbnails (bytes of
    THUMB_BYTES each; None or b"" where an image has none, or `thumbs` None for all)."""
    ph = np.asarray(phash, np.uint64).reshape(-1)
    keys = np.zeros((len(ph), KEY_WORDS), np.uint64)
    keys[:, 0] = ph
    if thumbs is not None and len(ph):
        has = np.array([bool(t) for t in thumbs], bool)
        if has.any():
            raw = b"".join(t for t in thumbs if t)
            keys[has, 1] = 1
            keys[has, 2:] = np.frombuffer(raw, np.uint64).reshape(-1, KEY_WORDS - 2)
    return keys


def as_image_keys(keys: np.ndarray) -> np.ndarray:
    """Keys [n, KEY_WORDS] from keys of any stored width: a bare pHash (uint64 [n] or
    [n, 1], as indexes before thumbnails stored them) has no thumbnail."""
    k = np.asarray(keys, np.uint64)
    if k.ndim == 1:
        k = k[:, None]
    if k.shape[1] == KEY_WORDS:
        return k
    return image_keys(k[:, 0])


def key_thumbnails(keys: np.ndarray) -> np.ndarray:
    """uint8 [n, THUMB_BYTES]: the thumbnails of keys (zeros where a key has none)."""
    k = np.ascontiguousarray(as_image_keys(keys)[:, 2:])
    return k.view(np.uint8).reshape(len(k), THUMB_BYTES)


def average_hashes(thumbs: np.ndarray) -> np.ndarray:
    """uint64 [n]: `imagehash.average_hash` of each thumbnail (bits of pixel > mean,
    row-major, first bit most significant), the LSH candidate hash of full keys."""
    t = np.asarray(thumbs, np.uint8).reshape(-1, THUMB_BYTES)
    bits = t > t.mean(axis=1, keepdims=True)
    return np.bitwise_or.reduce(np.where(bits, _BITS, np.uint64(0)), axis=1).astype(np.uint64)


def image_band_keys(keys: np.ndarray, phash_max_distance: int) -> np.ndarray:
    """LSH band keys [n, blocks] of image keys, so that every pair `near_images` accepts
    shares a block (pigeonhole): the average hash of the thumbnail cut into
    CANDIDATE_DISTANCE + 1 blocks, or, for a key without a thumbnail, the pHash cut into
    `phash_max_distance` + 1 blocks (then padded with the row's first block)."""
    from .lsh import phash_band_keys

    k = as_image_keys(keys)
    has = k[:, 1] == 1
    full = phash_band_keys(average_hashes(key_thumbnails(k)), CANDIDATE_DISTANCE)
    if has.all():
        return full
    legacy = phash_band_keys(k[:, 0], phash_max_distance)
    # legacy blocks are tagged apart from the average-hash blocks (bit 57)
    legacy |= np.uint64(1) << np.uint64(57)
    width = max(full.shape[1], legacy.shape[1])
    out = np.empty((len(k), width), np.uint64)
    for src, rows in ((full, has), (legacy, ~has)):
        pad = np.repeat(src[:, :1], width - src.shape[1], axis=1)
        out[rows] = np.concatenate((src, pad), axis=1)[rows]
    return out


def near_images(
    ka: np.ndarray, kb: np.ndarray, phash_max_distance: int
) -> tuple[np.ndarray, np.ndarray]:
    """(similarity, near) of pairs of image keys, row by row: a pure function of the two
    keys, so every path of the dedup (sharded steps, one-worker decision) agrees.

    Both keys with a thumbnail: near when the average hashes (`imagehash.average_hash`)
    differ in at most CANDIDATE_DISTANCE bits and the thumbnails by at most MAX_RMS grey
    levels root-mean-square and MAX_DIFF at every pixel; similarity = 1 - RMS / 255.
    Both without: the rule before thumbnails, pHash Hamming distance <=
    `phash_max_distance`, similarity = 1 - distance / 64. One of each: not near (their
    LSH blocks differ; a branch's stored keys are all of one kind, since the index
    parameters name `PHASH_ALGORITHM` and another one makes the index be rebuilt)."""
    from .lsh import popcount64

    a, b = as_image_keys(ka), as_image_keys(kb)
    both = (a[:, 1] == 1) & (b[:, 1] == 1)
    d = popcount64(np.bitwise_xor(a[:, 0], b[:, 0]))
    sim = 1.0 - d.astype(np.float64) / 64.0
    near = (d <= phash_max_distance) & (a[:, 1] == b[:, 1])
    if both.any():
        ta = key_thumbnails(a[both])
        tb = key_thumbnails(b[both])
        diff = ta.astype(np.int32) - tb.astype(np.int32)
        ssd = (diff * diff).sum(axis=1)
        worst = np.abs(diff).max(axis=1)
        ah = popcount64(np.bitwise_xor(average_hashes(ta), average_hashes(tb)))
        near[both] = (
            (ah <= CANDIDATE_DISTANCE)
            & (ssd <= MAX_RMS * MAX_RMS * THUMB_BYTES)
            & (worst <= MAX_DIFF)
        )
        sim[both] = 1.0 - np.sqrt(ssd / THUMB_BYTES) / 255.0
    return sim, near
