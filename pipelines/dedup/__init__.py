"""Deduplication: exact (record id = xxh3-128 of the cleaned content), near-duplicate text
(MinHash + LSH), near-duplicate images (64-bit pHash + Hamming distance). The decisions are
pure functions over arrays (`decide.decide_duplicates`); the Beam pipeline gathers the small
per-record keys (id, order, signature) in one step and calls them."""
