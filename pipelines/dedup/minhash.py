"""MinHash signatures of texts: word shingles hashed in numpy, permutations in rensa (Rust).

Tokens (`SHINGLE_SCHEME`): words of spaced scripts, split on bytes <= 0x20, and single
characters of the scripts written without spaces between words: CJK (U+3000-9FFF:
punctuation, kana, Bopomofo, ideographs; U+20000-2FFFF), Thai and Lao (U+0E00-0EFF),
Myanmar (U+1000-107F), Khmer (U+1780-17FF) and fullwidth forms (U+FF00-FFFF). A shingle is
`shingle_size` consecutive tokens, so a Chinese, Japanese or Thai text gets character
5-grams (one shingle per word before, issue 18: only exact duplicates were found) and a
mixed text gets both. Korean Hangul is written with spaces and stays word-based. The
choice is by Unicode range, per character, without language identification: the same
text gives the same tokens wherever it appears, and it costs nothing for ASCII text.

Shingling in Python (`" ".join(words[i:i+k])` per shingle) costs more than the MinHash
itself, so a whole batch is shingled at once: the lowercased texts are joined into one byte
buffer, words are found by their separators (bytes <= 0x20), each word is hashed with a
polynomial prefix-sum hash (vectorized, wrapping uint64 arithmetic), and each shingle hash
combines k consecutive word hashes of the same document. The flat shingle hashes go to
`rensa.RMinHash.digest_matrix_from_flat_token_hashes`, which applies the `num_perm`
permutations. Same text, same signature, in every process (no Python `hash()`).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import numpy as np

from ..gcpause import gc_paused

# names how texts become shingles: stored in dedup index params (another scheme: rebuild)
SHINGLE_SCHEME = "words+unspaced-chars-v2"

_P = np.uint64(0x100000001B3)
_P_INV = np.uint64(pow(0x100000001B3, -1, 1 << 64))
_SHINGLE_MUL = np.uint64(0x9E3779B97F4A7C15)
_powers: dict[str, np.ndarray] = {}


def _power_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    """P^i and P^-i (mod 2^64) for i < n, cached; grown by doubling (each half is the
    previous half times P^m: a few vectorized products instead of a serial cumprod)."""
    p = _powers.get("p")
    if p is None or len(p) < n:
        m = max(n, 1 << 20, 2 * len(p) if p is not None else 0)
        p = np.ones(m, np.uint64)
        q = np.ones(m, np.uint64)
        with np.errstate(over="ignore"):
            if m > 1:
                p[1] = _P
                q[1] = _P_INV
            k = 2
            while k < m:
                h = min(k, m - k)
                np.multiply(p[:h], p[k - 1] * _P, out=p[k : k + h])
                np.multiply(q[:h], q[k - 1] * _P_INV, out=q[k : k + h])
                k += h
        _powers["p"], _powers["q"] = p, q
    return _powers["p"][:n], _powers["q"][:n]


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads the polynomial hash over all 64 bits (in place when
    given a temporary)."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _split_unspaced(b: np.ndarray) -> np.ndarray:
    """The UTF-8 bytes with a space around every character of an unspaced script (see the
    module doc), so that each such character is one token."""
    n = len(b)
    hi = np.flatnonzero(b >= 0xE0)  # lead bytes of 3- and 4-byte characters
    if not len(hi):
        return b
    lead = b[hi]
    nxt = b[np.minimum(hi + 1, n - 1)]
    unspaced = (
        ((lead >= 0xE3) & (lead <= 0xE9))  # U+3000-9FFF
        | ((lead == 0xE0) & (nxt >= 0xB8) & (nxt <= 0xBB))  # U+0E00-0EFF Thai, Lao
        | ((lead == 0xE1) & (((nxt >= 0x80) & (nxt <= 0x81)) | (nxt == 0x9E) | (nxt == 0x9F)))
        | ((lead == 0xEF) & (nxt >= 0xBC))  # U+FF00-FFFF fullwidth forms
        | ((lead == 0xF0) & (nxt >= 0xA0) & (nxt <= 0xAF))  # U+20000-2FFFF ideographs
    )
    if not unspaced.any():
        return b
    starts = hi[unspaced]
    ends = starts + np.where(lead[unspaced] == 0xF0, 4, 3)
    cuts = np.unique(np.concatenate((starts, np.minimum(ends, n))))
    return np.insert(b, cuts, np.uint8(32))


def shingle_hashes(texts: Sequence[str], shingle_size: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(flat uint64 shingle hashes, uint64 row offsets) for a batch of texts.

    Shingles are `shingle_size` consecutive lowercased tokens (words, or characters of
    unspaced scripts: the module doc); a text with fewer tokens has one shingle of all
    of them, an empty text one shingle of hash 0.
    """
    n_docs = len(texts)
    if n_docs == 0:
        return np.empty(0, np.uint64), np.zeros(1, np.uint64)
    k = shingle_size
    data = "\x00".join(texts).lower().encode("utf-8")
    b = np.frombuffer(data, np.uint8)
    if not data.isascii():
        b = _split_unspaced(b)
    n = len(b)
    seps = np.flatnonzero(b <= 32)
    bounds = np.concatenate(([-1], seps))  # the separator before each run (word or empty)
    ends = np.append(seps, n)
    nonempty = np.flatnonzero(ends > bounds + 1)
    starts = bounds[nonempty] + 1
    # the document of each word: documents before it = the NUL separators before it
    doc_before = np.zeros(len(bounds), np.int64)
    np.cumsum(b[seps] == 0, out=doc_before[1:])
    word_doc = doc_before[nonempty]
    pw, qw = _power_tables(n + 1)
    with np.errstate(over="ignore"):
        # word hash: sum of byte * P^(offset in word); per word with one reduceat over the
        # bytes * P^position (separators zeroed), rebased by P^-start
        v = np.multiply(b, pw[:n], dtype=np.uint64)
        v[seps] = 0
        if len(starts):
            words = np.add.reduceat(v, starts)
            words *= qw[starts]
            words = _mix64(words)
        else:
            words = np.empty(0, np.uint64)
        del v
        n_words = len(words)
        counts = np.bincount(word_doc, minlength=n_docs)
        if n_words >= k:
            sh = words[: n_words - k + 1].copy()
            for j in range(1, k):
                sh *= _SHINGLE_MUL
                sh += words[j : n_words - k + 1 + j]
            sh_doc = word_doc[: n_words - k + 1]
            valid = word_doc[k - 1 :] == sh_doc
            sh, sh_doc = _mix64(sh[valid]), sh_doc[valid]
        else:
            sh, sh_doc = np.empty(0, np.uint64), np.empty(0, np.int64)
        short = np.flatnonzero(counts < k)
        if len(short):
            word_start = np.concatenate(([0], np.cumsum(counts)))
            extra = np.zeros(len(short), np.uint64)
            for i, d in enumerate(short.tolist()):
                acc = np.uint64(0)
                for w in words[word_start[d] : word_start[d + 1]]:
                    acc = acc * _SHINGLE_MUL + w
                extra[i] = acc
            sh = np.concatenate((sh, _mix64(extra)))
            sh_doc = np.concatenate((sh_doc, short))
            order = np.argsort(sh_doc, kind="stable")
            sh, sh_doc = sh[order], sh_doc[order]
    offsets = np.zeros(n_docs + 1, np.uint64)
    np.cumsum(np.bincount(sh_doc, minlength=n_docs), out=offsets[1:])
    return np.ascontiguousarray(sh), offsets


def signatures_from_shingles(
    flat: np.ndarray, offsets: np.ndarray, num_perm: int = 112, seed: int = 42
) -> np.ndarray:
    """MinHash signatures (uint32, shape [docs, num_perm]) of pre-hashed shingles."""
    import rensa

    n_docs = len(offsets) - 1
    if n_docs == 0:
        return np.empty((0, num_perm), np.uint32)
    matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(flat, offsets, num_perm, seed)
    # rensa hands the matrix out only as Python lists: build them with the cyclic GC off
    # (a batch is ~100 container allocations per row, which would trigger collections
    # that scan every live object) and pack each row with `array` (C-level conversion)
    with gc_paused():
        rows = matrix.to_rows()
        packed = bytearray().join([array("I", r) for r in rows])
        del rows
    return np.frombuffer(packed, np.uint32).reshape(n_docs, num_perm)


# texts per shingling pass: ~256 KB of text keeps the uint64 temporaries (8 bytes per byte
# of text) in cache; whole 2 MB batches ran ~1.4x slower
_CHUNK_CHARS = 1 << 18


def minhash_signatures(
    texts: Sequence[str], *, shingle_size: int = 5, num_perm: int = 112, seed: int = 42
) -> np.ndarray:
    """MinHash signatures of a batch of texts: uint32 array [len(texts), num_perm].

    Computed in chunks of ~256 KB of text (the signature of a text does not depend on the
    other texts of its batch).
    """
    n = len(texts)
    out = np.empty((n, num_perm), np.uint32)
    i = 0
    while i < n:
        j, size = i, 0
        while j < n and (size < _CHUNK_CHARS or j == i):
            size += len(texts[j])
            j += 1
        flat, offsets = shingle_hashes(texts[i:j], shingle_size)
        out[i:j] = signatures_from_shingles(flat, offsets, num_perm, seed)
        i = j
    return out


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise fraction of equal signature values (the MinHash estimate of Jaccard)."""
    return (a == b).mean(axis=-1)
