"""Deduplication: exact (record id = the repository's id hash of the cleaned content, xxh3-128 by
default or BLAKE3-128: `init --id-hash`), near-duplicate text
(MinHash + LSH), near-duplicate images (64-bit pHash + Hamming distance). The decisions are
pure functions over arrays (`decide.decide_duplicates`); the Beam pipeline gathers the small
per-record keys (id, order, signature) in one step and calls them."""
