import random

import numpy as np
import pytest
import xxhash
from pipeline_samples import png_bytes, words_doc

from pipelines.config import DedupRules
from pipelines.dedup.decide import decide_duplicates
from pipelines.dedup.index import DedupIndex
from pipelines.dedup.lsh import (
    candidate_pairs,
    connected_components,
    phash_band_keys,
    phash_clusters,
    representatives,
)
from pipelines.dedup.minhash import minhash_signatures, shingle_hashes
from pipelines.filters.image import check_image


def shingles(text, k=5):
    w = text.lower().split()
    return {" ".join(w[i : i + k]) for i in range(max(1, len(w) - k + 1))}


def jaccard(a, b):
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def test_shingles_are_deterministic_and_case_insensitive():
    f1, o1 = shingle_hashes(["The Quick brown fox jumps over", "a b"], 5)
    f2, o2 = shingle_hashes(["the quick  brown fox jumps over", "a b"], 5)
    assert np.array_equal(f1, f2) and o1.tolist() == [0, 2, 3]
    sig = minhash_signatures(["one two three four five six seven"] * 2 + ["x"])
    assert sig.shape == (3, 112) and sig.dtype == np.uint32
    assert (sig[0] == sig[1]).all() and (sig[0] == sig[2]).mean() < 0.1


def test_minhash_estimates_jaccard(vocab):
    rng = random.Random(1)
    a = words_doc(rng, vocab, 200)
    words = a.split()
    for i in range(0, 200, 25):
        words[i] = "zzz"
    b = " ".join(words)
    sig = minhash_signatures([a, b], num_perm=256)
    assert abs((sig[0] == sig[1]).mean() - jaccard(a, b)) < 0.1


def _near_dup_corpus(vocab, seed=3):
    """Base docs; light edits (true Jaccard >= 0.8), heavy edits (0.3-0.7), unrelated docs."""
    rng = random.Random(seed)
    docs, origin = [], []
    for i in range(300):
        base = words_doc(rng, vocab, rng.randint(120, 220))
        docs.append(base)
        origin.append(i)
        words = base.split()
        if i % 3 == 0:  # 1-2 word edits: a near duplicate
            w = list(words)
            for _ in range(rng.randint(1, 2)):
                w[rng.randrange(len(w))] = rng.choice(vocab)
            docs.append(" ".join(w))
            origin.append(i)
        if i % 5 == 0:  # 8-15% of the words changed: related, not a near duplicate
            w = list(words)
            for _ in range(int(len(w) * rng.uniform(0.08, 0.15))):
                w[rng.randrange(len(w))] = rng.choice(vocab)
            docs.append(" ".join(w))
            origin.append(i)
    return docs, origin


def test_near_dup_precision_and_recall_at_default_threshold(vocab):
    docs, origin = _near_dup_corpus(vocab)
    rules = DedupRules()
    truth = set()
    groups = {}
    for idx, o in enumerate(origin):
        groups.setdefault(o, []).append(idx)
    for members in groups.values():
        for x in members:
            for y in members:
                if x < y and jaccard(docs[x], docs[y]) >= rules.text_threshold:
                    truth.add((x, y))
    assert len(truth) >= 90
    ids = np.array([xxhash.xxh3_128_digest(d.encode()) for d in docs], "S16")
    sigs = minhash_signatures(
        docs, shingle_size=rules.shingle_size, num_perm=rules.num_perm, seed=rules.seed
    )
    d = decide_duplicates(
        ids,
        np.array(["text"] * len(docs), object),
        np.arange(len(docs)),
        sigs,
        np.zeros(len(docs), np.uint64),
        lambda x: np.zeros(len(x), bool),
        DedupIndex.empty(rules),
        rules,
    )
    id_row = {ids[i : i + 1].tobytes(): i for i in range(len(docs))}
    predicted = {
        (
            min(i, id_row[d.duplicate_of[i : i + 1].tobytes()]),
            max(i, id_row[d.duplicate_of[i : i + 1].tobytes()]),
        )
        for i in np.flatnonzero(~d.keep)
    }
    tp = len(predicted & truth)
    precision, recall = tp / len(predicted), tp / len(truth)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall, len(predicted), len(truth))
    # the representative is the first in (key, line) order: the base doc, which precedes its variants
    assert all(id_row[d.duplicate_of[i : i + 1].tobytes()] < i for i in np.flatnonzero(~d.keep))


def test_exact_dedup_keeps_first_and_parent_wins():
    ids = np.array([b"a" * 16, b"b" * 16, b"a" * 16, b"c" * 16], "S16")
    rules = DedupRules(near_text=False, near_image=False)
    parent = lambda x: x == np.array(b"c" * 16, "S16")  # noqa: E731
    d = decide_duplicates(
        ids,
        np.array(["text"] * 4, object),
        np.array([2, 0, 1, 3]),
        np.zeros((4, 112), np.uint32),
        np.zeros(4, np.uint64),
        parent,
        DedupIndex.empty(rules),
        rules,
    )
    # rows 0 and 2 share an id: row 2 has the lower priority value, so row 2 is kept
    assert d.keep.tolist() == [False, True, True, False]
    assert d.kind.tolist() == ["exact", None, None, "exact"]


def test_near_dup_against_parent_index(vocab):
    rng = random.Random(5)
    rules = DedupRules()
    a = words_doc(rng, vocab, 150)
    b = a.replace(a.split()[10], "changed", 1)
    sig = minhash_signatures([a, b])
    parent_index = DedupIndex.empty(rules).extended(
        np.array([b"p" * 16], "S16"), sig[:1], np.empty(0, "S16"), []
    )
    d = decide_duplicates(
        np.array([b"n" * 16], "S16"),
        np.array(["text"], object),
        np.arange(1),
        sig[1:],
        np.zeros(1, np.uint64),
        lambda x: np.zeros(len(x), bool),
        parent_index,
        rules,
    )
    assert (
        d.keep.tolist() == [False]
        and d.kind[0] == "near"
        and d.duplicate_of[0:1].tobytes() == b"p" * 16
    )


def test_index_roundtrip():
    rules = DedupRules()
    idx = DedupIndex.empty(rules).extended(
        np.array([b"\x00" * 15 + b"\x01"], "S16"),
        np.ones((1, 112), np.uint32),
        np.array([b"\x00" * 16], "S16"),
        [7],
    )
    back = DedupIndex.from_bytes(idx.to_bytes())
    assert back.params == rules.index_params()
    assert (
        back.text_ids.tobytes() == idx.text_ids.tobytes()
        and back.image_ids.tobytes() == b"\x00" * 16
    )
    assert back.text_sigs.shape == (1, 112) and back.image_keys[:, :2].tolist() == [[7, 0]]


def test_phash_near_duplicates_resized_and_recompressed():
    a = check_image(png_bytes(256, 192, seed=1))
    b = check_image(
        png_bytes(200, 150, seed=1, fmt="JPEG", quality=70)
    )  # same picture, resized + JPEG
    c = check_image(png_bytes(256, 192, seed=2))
    hashes = np.array([a.phash, b.phash, c.phash], np.uint64)
    reps = phash_clusters(hashes, np.arange(3), max_distance=DedupRules().phash_max_distance)
    assert reps.tolist() == [0, 0, 2]


def test_phash_bands_find_every_pair_within_distance():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 200, dtype=np.int64).astype(np.uint64)
    flipped = base.copy()
    for i in range(200):  # flip exactly 4 random bits
        for bit in rng.choice(64, 4, replace=False):
            flipped[i] ^= np.uint64(1) << np.uint64(int(bit))
    hashes = np.concatenate((base, flipped))
    pairs = {tuple(p) for p in candidate_pairs(phash_band_keys(hashes, 4)).tolist()}
    assert all((i, i + 200) in pairs for i in range(200))


@pytest.mark.parametrize("n", [1, 5])
def test_components_and_representatives(n):
    pairs = np.array([[0, 1], [1, 2], [3, 4]], np.int64)[: n and 3]
    labels = connected_components(6, pairs)
    reps = representatives(labels, np.array([5, 1, 9, 0, 2, 3]))
    assert reps.tolist() == [1, 1, 1, 3, 3, 5]
