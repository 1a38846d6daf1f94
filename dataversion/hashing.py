"""Every id in dataversion is computed here.

Record ids are a 16-byte hash of canonical content: xxh3-128 by default, or BLAKE3 truncated
to 16 bytes in a repository created with `init --id-hash blake3` (its config's `id_hash`; see
the threat model in docs/ARCHITECTURE.md). Every component that computes record ids takes the
repository's choice (`id_hasher`). Shards and blobs are named by xxh3-128 of
their bytes (`object_id`); commits, content-tree nodes and packings by SHA-256 of their
bytes (`sha256_hex`), so a commit id is a cryptographic binding of the exact records: it
covers the content tree's root, a Merkle root over every record's BLAKE2b digest
(`shards.entry_digests`). The additive xxh3 digest helpers below are format 1's, kept for
`dataversion upgrade`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from typing import Any

import xxhash

from .errors import BadInputError

DIGEST_MOD = 1 << 128
_SEP = b"\x00"

XXH3_128 = "xxh3-128"
BLAKE3 = "blake3"
ID_HASHES = (XXH3_128, BLAKE3)  # record-id hashes a repository may choose; all 16 bytes wide
DEFAULT_ID_HASH = XXH3_128


def id_hasher(id_hash: str = DEFAULT_ID_HASH) -> Callable[[bytes | memoryview], bytes]:
    """A function bytes -> 16-byte record id of the record-id hash `id_hash` (one of
    `ID_HASHES`; BLAKE3 is truncated to 16 bytes, so ids keep their width). BadInputError
    for another name. The BLAKE3 function reuses one hasher (reset after each id: 1.3x the
    rate of a new hasher per id on ~1 KB texts), so get one per thread, not one to share."""
    if id_hash == XXH3_128:
        return xxhash.xxh3_128_digest
    if id_hash == BLAKE3:
        import blake3

        h = blake3.blake3()

        def blake3_16(data: bytes | memoryview) -> bytes:
            h.update(data)
            out = h.digest(16)
            h.reset()
            return out

        return blake3_16
    raise BadInputError(f"unknown record-id hash {id_hash!r}", hint=f"use one of {', '.join(ID_HASHES)}")


def check_id_hash(id_hash: str) -> str:
    """`id_hash` if it names a known record-id hash; BadInputError otherwise."""
    id_hasher(id_hash)
    return id_hash


def record_id_of_bytes(data: bytes | memoryview, id_hash: str = DEFAULT_ID_HASH) -> bytes:
    """The 16-byte record id of a payload: `id_hash` (default xxh3-128) of its bytes."""
    return id_hasher(id_hash)(data)


def record_id_of_text(text: str, id_hash: str = DEFAULT_ID_HASH) -> bytes:
    """The record id of a text record: `id_hash` (default xxh3-128) of its UTF-8 bytes."""
    return id_hasher(id_hash)(text.encode("utf-8"))


def object_id(data: bytes | memoryview) -> str:
    """The name of a stored object: xxh3-128 of its bytes, 32 lowercase hex chars."""
    return xxhash.xxh3_128_hexdigest(data)


def sha256_hex(data: bytes | memoryview) -> str:
    """SHA-256 of bytes, 64 lowercase hex chars: the names of commits, tree nodes and packings."""
    return hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8. Same value, same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def entry_hash(
    record_id: bytes, modality: str, source: str | None, label: str | None, meta: str | None
) -> int:
    """Hash of one record entry (id + the metadata training sees), as an int < 2**128."""
    h = xxhash.xxh3_128()
    h.update(record_id)
    for part in (modality, source, label, meta):
        h.update(_SEP)
        if part is not None:
            h.update(part.encode("utf-8"))
    return h.intdigest()


def entries_digest(
    record_ids: Iterable[bytes],
    modalities: Iterable[str],
    sources: Iterable[str | None],
    labels: Iterable[str | None],
    metas: Iterable[str | None],
) -> int:
    """Sum (mod 2**128) of the entry hashes of many records."""
    total = 0
    for rid, mod, src, lab, meta in zip(record_ids, modalities, sources, labels, metas):
        total += entry_hash(rid, mod, src, lab, meta)
    return total % DIGEST_MOD


def digest_hex(value: int) -> str:
    """A digest as 32 hex chars (how it is stored in commits and manifests)."""
    return f"{value % DIGEST_MOD:032x}"


def digest_int(value: str) -> int:
    """Parse a stored digest."""
    return int(value, 16)
