"""Near-duplicate text without word separators (issue 18, item 7)."""

from __future__ import annotations

import numpy as np
from quality_sets import cjk_near_duplicates

from pipelines.config import DedupRules
from pipelines.dedup.lsh import minhash_clusters
from pipelines.dedup.minhash import SHINGLE_SCHEME, minhash_signatures, shingle_hashes


def char_shingles(text: str, k: int = 5) -> set[str]:
    return {text[i : i + k] for i in range(max(1, len(text) - k + 1))}


def test_unspaced_scripts_are_shingled_by_character():
    flat, offsets = shingle_hashes(
        ["中文字符串测试文本", "ภาษาไทยไม่มีช่องว่าง", "日本語のテキスト", "abc def"], 5
    )
    per_doc = np.diff(offsets).tolist()
    # 9, 20 and 8 characters: 5, 16 and 4 character 5-grams; two English words: one shingle
    assert per_doc == [5, 16, 4, 1]
    # Korean is written with spaces: words, as before
    _, offsets = shingle_hashes(["한국어 문장은 띄어쓰기를 합니다"], 5)
    assert np.diff(offsets).tolist() == [1]


def test_mixed_text_and_ascii_unchanged():
    """ASCII text keeps its word shingles (the same hashes as before the change); CJK
    characters inside an English text are tokens of their own."""
    a = shingle_hashes(["the quick brown fox jumps over the lazy dog"], 5)[0]
    b = shingle_hashes(["the quick brown fox jumps over the lazy dog"], 5)[0]
    assert a.tolist() == b.tolist() and len(a) == 5
    _, offsets = shingle_hashes(["see 東京 and 大阪 today"], 5)
    assert np.diff(offsets).tolist() == [3]  # 7 tokens: see 東 京 and 大 阪 today


def test_index_params_name_the_shingle_scheme():
    assert DedupRules().index_params()["shingles"] == SHINGLE_SCHEME


def _clusters(texts):
    rules = DedupRules()
    sigs = minhash_signatures(
        texts, shingle_size=rules.shingle_size, num_perm=rules.num_perm, seed=rules.seed
    )
    return minhash_clusters(
        sigs, np.arange(len(texts)), bands=rules.bands, threshold=rules.text_threshold
    )


def test_cjk_near_duplicate_recall():
    """Generated CJK and Thai texts, each with a copy with 1% of its characters edited
    (character 5-gram Jaccard ~0.91): every pair is found, no other pair is merged. At 2%
    edits (Jaccard ~0.83, near the 0.8 threshold) MinHash's estimate still finds most."""
    texts, pairs = cjk_near_duplicates(edits=0.01)
    reps = _clusters(texts)
    recall = np.mean([reps[a] == reps[b] for a, b in pairs])
    assert recall >= 0.95, recall
    assert len(set(reps.tolist())) == len(pairs)  # nothing merged across pairs
    texts, pairs = cjk_near_duplicates(edits=0.02, seed=1)
    reps = _clusters(texts)
    high = [
        (a, b)
        for a, b in pairs
        if len(char_shingles(texts[a]) & char_shingles(texts[b]))
        / len(char_shingles(texts[a]) | char_shingles(texts[b]))
        >= 0.85
    ]
    assert len(high) >= 20
    assert np.mean([reps[a] == reps[b] for a, b in high]) >= 0.95
    assert len(set(reps.tolist())) >= len(pairs)
