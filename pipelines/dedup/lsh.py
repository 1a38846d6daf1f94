"""Locality-sensitive hashing and clustering, vectorized over whole arrays.

- `minhash_band_keys`: one 64-bit key per (document, band) of a MinHash signature.
- `phash_band_keys`: the 64 bits cut into `max_distance + 1` blocks: two hashes within
  Hamming distance `max_distance` agree on at least one block (pigeonhole), so the
  candidate search misses no pair.
- `candidate_pairs`: documents sharing a band key. Per band the keys are sorted and each
  document is paired with the next `max_window` documents of its bucket: all pairs for
  buckets up to `max_window + 1` members, a connected chain beyond (a huge bucket of
  near-identical documents stays connected without quadratic pairs).
- `connected_components` of the verified pairs (scipy), and `representatives`: in every
  component the member with the lowest priority value is kept, every other member points
  to it.
"""

from __future__ import annotations

import numpy as np

_BAND_MULS = np.array(
    [
        0x9E3779B97F4A7C15,
        0xC2B2AE3D27D4EB4F,
        0x165667B19E3779F9,
        0xD6E8FEB86659FD93,
        0xFF51AFD7ED558CCD,
        0xC4CEB9FE1A85EC53,
        0x2545F4914F6CDD1D,
        0x94D049BB133111EB,
    ],
    dtype=np.uint64,
)


_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def popcount64(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64 (numpy >= 2 has a ufunc for it; a byte table otherwise)."""
    x = np.asarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _BYTE_POPCOUNT[x.reshape(-1, 1).view(np.uint8)].sum(axis=1).reshape(x.shape)


def _mix64(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def minhash_band_keys(signatures: np.ndarray, bands: int) -> np.ndarray:
    """uint64 keys [n, bands]: band b of row i hashes signature[i, b*r:(b+1)*r]."""
    n, p = signatures.shape
    r = p // bands
    sig = signatures[:, : bands * r].reshape(n, bands, r)
    # in place, widening one column of values at a time (no uint64 copy of the signatures)
    acc = np.zeros((n, bands), np.uint64)
    with np.errstate(over="ignore"):
        for j in range(r):
            acc *= _BAND_MULS[j % len(_BAND_MULS)]
            acc += sig[:, :, j]
            acc += np.uint64(j + 1)
        return _mix64(acc)


def phash_band_keys(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """uint64 keys [n, max_distance + 1]: block b of the 64 bits, tagged with b."""
    blocks = max_distance + 1
    h = np.asarray(hashes, dtype=np.uint64)
    edges = np.linspace(0, 64, blocks + 1).astype(int)
    out = np.empty((len(h), blocks), np.uint64)
    for b in range(blocks):
        lo, hi = edges[b], edges[b + 1]
        width = hi - lo
        mask = np.uint64((1 << width) - 1) if width < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
        out[:, b] = ((h >> np.uint64(lo)) & mask) | (np.uint64(b) << np.uint64(58))
    return out


def candidate_pairs(band_keys: np.ndarray, max_window: int = 32) -> np.ndarray:
    """Unique pairs (i < j), int64 array [m, 2], of rows that share at least one band key."""
    n, n_bands = band_keys.shape
    if n < 2:
        return np.empty((0, 2), np.int64)
    chunks = []
    for b in range(n_bands):
        col = band_keys[:, b]
        order = np.argsort(col, kind="stable")
        sk = col[order]
        for d in range(1, max_window + 1):
            eq = sk[d:] == sk[:-d]
            if not eq.any():
                break
            i, j = order[:-d][eq], order[d:][eq]
            chunks.append(np.minimum(i, j).astype(np.int64) * n + np.maximum(i, j))
    if not chunks:
        return np.empty((0, 2), np.int64)
    codes = np.unique(np.concatenate(chunks))
    return np.stack((codes // n, codes % n), axis=1)


def verify_minhash_pairs(
    signatures: np.ndarray, pairs: np.ndarray, threshold: float, chunk: int = 65536
) -> np.ndarray:
    """The pairs whose estimated Jaccard similarity is >= threshold."""
    keep = np.zeros(len(pairs), bool)
    for s in range(0, len(pairs), chunk):
        p = pairs[s : s + chunk]
        keep[s : s + chunk] = (signatures[p[:, 0]] == signatures[p[:, 1]]).mean(
            axis=1
        ) >= threshold - 1e-12
    return pairs[keep]


def verify_phash_pairs(hashes: np.ndarray, pairs: np.ndarray, max_distance: int) -> np.ndarray:
    """The pairs whose Hamming distance is <= max_distance."""
    h = np.asarray(hashes, dtype=np.uint64)
    d = popcount64(h[pairs[:, 0]] ^ h[pairs[:, 1]])
    return pairs[d <= max_distance]


def connected_components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Component label per row (rows without pairs are their own component)."""
    if len(pairs) == 0:
        return np.arange(n)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as cc

    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return cc(graph, directed=False)[1]


def representatives(labels: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """Per row, the row kept for its component: the member with the lowest priority
    (ties: the lowest row index)."""
    n = len(labels)
    if n == 0:
        return np.empty(0, np.int64)
    order = np.lexsort((np.arange(n), priority, labels))
    sorted_labels = labels[order]
    first = np.ones(n, bool)
    first[1:] = sorted_labels[1:] != sorted_labels[:-1]
    rep_of_label = np.empty(labels.max() + 1, np.int64)
    rep_of_label[sorted_labels[first]] = order[first]
    return rep_of_label[labels]


def minhash_clusters(
    signatures: np.ndarray,
    priority: np.ndarray,
    *,
    bands: int,
    threshold: float,
    max_window: int = 32,
) -> np.ndarray:
    """Representative row per row: MinHash LSH candidates, verified, connected components."""
    n = len(signatures)
    if n == 0:
        return np.empty(0, np.int64)
    pairs = candidate_pairs(minhash_band_keys(signatures, bands), max_window)
    pairs = verify_minhash_pairs(signatures, pairs, threshold)
    return representatives(connected_components(n, pairs), priority)


def phash_clusters(
    hashes: np.ndarray, priority: np.ndarray, *, max_distance: int, max_window: int = 32
) -> np.ndarray:
    """Representative row per row for 64-bit perceptual hashes within `max_distance` bits."""
    n = len(hashes)
    if n == 0:
        return np.empty(0, np.int64)
    pairs = candidate_pairs(phash_band_keys(hashes, max_distance), max_window)
    pairs = verify_phash_pairs(hashes, pairs, max_distance)
    return representatives(connected_components(n, pairs), priority)


def image_clusters(
    keys: np.ndarray, priority: np.ndarray, *, phash_max_distance: int, max_window: int = 32
) -> np.ndarray:
    """Representative row per row for image keys (`phash.image_keys`): LSH candidates on
    `phash.image_band_keys`, verified by `phash.near_images` (the rule the sharded steps
    apply), connected components."""
    from .phash import as_image_keys, image_band_keys, near_images

    n = len(keys)
    if n == 0:
        return np.empty(0, np.int64)
    k = as_image_keys(keys)
    pairs = candidate_pairs(image_band_keys(k, phash_max_distance), max_window)
    if len(pairs):
        pairs = pairs[near_images(k[pairs[:, 0]], k[pairs[:, 1]], phash_max_distance)[1]]
    return representatives(connected_components(n, pairs), priority)
