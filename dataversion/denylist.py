"""The repository's denylist: record ids (content digests) that an erasure removed.

One object per id, `denylist/<hex id>`, holding only the id of the erasure that put it there:
the denylist holds digests, never content. A record id is the hash of the record's
canonical content, so the same content arriving again (`add`, `ingest`, `Repo.commit`) has
the same id and is rejected with reason `erased` (`ERASED`).
"""

from __future__ import annotations

import numpy as np

from .hashing import canonical_json
from .stores import Store

DENYLIST = "denylist/"
ERASED = "erased"  # the reject reason of content the denylist holds


def denylist_key(hex_id: str) -> str:
    return f"{DENYLIST}{hex_id}"


def deny(store: Store, hex_ids: list[str], erasure_id: str) -> None:
    """Add ids to the denylist (idempotent; an id denied by an earlier erasure keeps it)."""
    for h in hex_ids:
        store.put_if_absent(denylist_key(h), canonical_json({"erasure": erasure_id}))


def denied_hex(store: Store) -> set[str]:
    """Every denied record id (hex). One listing, no object read."""
    return {info.key[len(DENYLIST):] for info in store.list(DENYLIST)}


def denied_ids(store: Store) -> np.ndarray:
    """Every denied record id as a sorted numpy 'S16' array (for `np.isin`)."""
    raw = sorted(bytes.fromhex(h) for h in denied_hex(store) if len(h) == 32)
    return np.array(raw, dtype="S16") if raw else np.empty(0, dtype="S16")


def denied_mask(ids: np.ndarray, denied: np.ndarray) -> np.ndarray:
    """Which of `ids` ('S16') the denylist holds."""
    if not len(denied) or not len(ids):
        return np.zeros(len(ids), dtype=bool)
    return np.isin(ids, denied)
