"""The repository's denylist: record ids (content digests) that an erasure removed.

One object per id, `denylist/<hex id>`, holding only the id of the erasure that put it there:
the denylist holds digests, never content. A record id is the hash of the record's
canonical content, so the same content arriving again (`add`, `ingest`, `Repo.commit`) has
the same id and is rejected with reason `erased` (`ERASED`).

One text can be stored in two forms: as it is (`add`) and cleaned (`ingest` normalizes and
redacts), under two ids. Packages register how their import path transforms a text
(entry point group `dataversion.content_forms`: `fn(texts) -> [text or None]`; `pipelines`
registers ingest's default cleaning), and the erased text's other forms are denied with it
(`alias_ids`, at erase time) while `add` checks a text's other forms against the denylist
(`denied_mask_of_texts`): erased content stays out whichever path brings it back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np

from .hashing import canonical_json, id_hasher
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


CONTENT_FORMS = "dataversion.content_forms"  # entry-point group: other forms a text is stored in


@functools.cache
def content_forms() -> tuple[Callable[[list[str]], list[str | None]], ...]:
    """The registered text transforms (see the module doc); a package that is not installed
    or does not import registers none."""
    from importlib.metadata import entry_points

    out = []
    for ep in sorted(entry_points(group=CONTENT_FORMS), key=lambda e: e.name):
        try:
            out.append(ep.load())
        except ImportError:
            continue
    return tuple(out)


def alias_ids(texts: Sequence[str], id_hash: str) -> list[bytes]:
    """The record ids `texts` get in their other registered forms (distinct from their own)."""
    h = id_hasher(id_hash)
    out: set[bytes] = set()
    for form in content_forms():
        for text, other in zip(texts, form(list(texts)), strict=True):
            if other is not None and other != text:
                out.add(h(other.encode("utf-8")))
    return sorted(out)


def denied_mask_of_texts(texts: Sequence[str | None], denied: np.ndarray, id_hash: str) -> np.ndarray:
    """Which texts (None: not a text) the denylist holds in one of their other forms."""
    hit = np.zeros(len(texts), dtype=bool)
    at = [i for i, t in enumerate(texts) if t is not None]
    if not len(denied) or not at:
        return hit
    h = id_hasher(id_hash)
    for form in content_forms():
        others = form([texts[i] for i in at])
        ids = np.array([h(o.encode("utf-8")) if o is not None else b"\0" * 16 for o in others], dtype="S16")
        hit[np.asarray(at)] |= np.isin(ids, denied)
    return hit
