"""Packing: where the records of a content root lie, separate from what the commit holds.

A packing object (`packings/<sha256>.json`) names the content root it packs, the record
count, and two trees (`dataversion.tree`):
- the index tree (`INDEX` entries): record id -> 12-byte shard-id prefix + row in that shard;
- the shard table (`SHARDS` entries, keyed by the shard prefix padded to 16 bytes): full
  shard id, rows, live rows (rows the index points to), size in bytes;
and an erased set (placeholder for erasure: empty today).
The packing a root uses is found through the pointer `packing/<root>` (the packing id as
text), created with `point_packing` and moved only by compare-and-swap (`repoint_packing`:
repack and erasure). Commits never name a packing, so re-pointing changes no commit id.

Every reader checks what it serves against the commit: the packing names the commit's root
and count (`ObjectDB.read_packing`), the index holds exactly the content tree's ids over the
range read, and the ids of the shard rows read equal the ids the tree says
(`ObjectDB.check_rows`). A mismatch is CorruptObjectError (exit 5) naming both objects.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConflictError, CorruptObjectError, NotFoundError
from .hashing import canonical_json, sha256_hex
from .tree import EMPTY_ROOT, INDEX, SHARDS, TreeReader

PACKING_FORMAT = 2
PACKINGS_PREFIX = "packings/"
POINTER_PREFIX = "packing/"
SHARD_PREFIX_BYTES = 12


def packing_key(packing_id: str) -> str:
    return f"{PACKINGS_PREFIX}{packing_id}.json"


def pointer_key(root: str) -> str:
    return f"{POINTER_PREFIX}{root}"


def shard_prefix(shard_id: str) -> bytes:
    """The 12-byte prefix of a shard id that index entries carry."""
    return bytes.fromhex(shard_id)[:SHARD_PREFIX_BYTES]


def shard_table_key(shard_id: str) -> bytes:
    """The shard table's key of a shard: its prefix padded to 16 bytes."""
    return shard_prefix(shard_id) + b"\x00" * (16 - SHARD_PREFIX_BYTES)


@dataclass(frozen=True)
class Packing:
    """Where the records of `root` lie (see the module docstring)."""

    root: str
    count: int
    index: str = EMPTY_ROOT
    shards: str = EMPTY_ROOT
    erased: tuple[str, ...] = field(default=())

    def to_bytes(self) -> bytes:
        return canonical_json({"format": PACKING_FORMAT, "root": self.root, "count": self.count, "index": self.index,
                               "shards": self.shards, "erased": list(self.erased)})

    @property
    def id(self) -> str:
        return sha256_hex(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes, expected_id: str) -> Packing:
        actual = sha256_hex(data)
        if actual != expected_id:
            raise CorruptObjectError(f"packing {expected_id} is corrupt: its bytes hash to {actual}", hint="run `dataversion verify`")
        try:
            d = json.loads(data)
            return cls(str(d["root"]), int(d["count"]), str(d["index"]), str(d["shards"]), tuple(d.get("erased", ())))
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptObjectError(f"packing {expected_id} cannot be parsed: {e}") from e


@dataclass(frozen=True)
class ShardInfo:
    """One shard of a packing's shard table."""

    id: str
    rows: int
    live: int
    size: int
    # the index's 12-byte shard prefix for this shard's rows: the prefix of `id`, or, after
    # an erasure rewrote the shard, the prefix of the shard it replaced (an alias: the
    # rows stay where they were, so no index entry moves)
    key: bytes = b""

    def to_dict(self) -> dict[str, Any]:
        from .shards import shard_key

        return {"id": self.id, "rows": self.rows, "live_rows": self.live, "size": self.size, "key": shard_key(self.id)}


def shard_infos(entries: np.ndarray) -> list[ShardInfo]:
    """ShardInfo of SHARDS entries."""
    raw = np.ascontiguousarray(entries["shard"]).tobytes()
    keys = np.ascontiguousarray(entries["id"]).tobytes()
    return [ShardInfo(raw[16 * i : 16 * i + 16].hex(), int(r), int(lv), int(s), keys[16 * i : 16 * i + SHARD_PREFIX_BYTES])
            for i, (r, lv, s) in enumerate(zip(entries["rows"].tolist(), entries["live"].tolist(), entries["size"].tolist()))]


def shard_entries(infos: list[ShardInfo]) -> np.ndarray:
    out = np.zeros(len(infos), dtype=SHARDS)
    for i, s in enumerate(infos):
        out[i] = (shard_table_key(s.id), bytes.fromhex(s.id), s.rows, s.live, s.size)
    return out


_PACKING_ID_RE = re.compile(r"[0-9a-f]{64}")  # what a pointer holds: a packing's SHA-256


def read_pointer(store, root: str) -> tuple[str, str] | None:
    """(packing id, version token) the pointer of `root` names, or None."""
    try:
        data, token = store.get_versioned(pointer_key(root))
    except NotFoundError:
        return None
    packing_id = data.decode("ascii", "replace").strip()
    if not _PACKING_ID_RE.fullmatch(packing_id):
        raise CorruptObjectError(f"packing pointer {pointer_key(root)} is corrupt: it holds {packing_id[:40]!r}, not a packing id",
                                 hint="run `dataversion verify`; `dataversion repack` writes the packing again")
    return packing_id, token


def point_packing(store, root: str, packing_id: str) -> str:
    """Make the pointer of `root` name `packing_id` (a packing the caller just wrote or
    freshened): created if absent, else moved there by compare-and-swap. A root that an old,
    unreachable commit once had may point at old objects a concurrent gc is deleting: the
    writer's own, fresh packing is the one to use."""
    data = packing_id.encode("ascii")
    for _attempt in range(5):
        if store.put_if_absent(pointer_key(root), data):
            return packing_id
        current = read_pointer(store, root)
        if current is None:
            continue  # deleted meanwhile (gc of an unreachable root): create again
        if current[0] == packing_id:
            store.touch(pointer_key(root))
            return packing_id
        try:
            store.put_if_match(pointer_key(root), data, current[1])
            return packing_id
        except ConflictError:
            continue
    raise ConflictError(f"the packing pointer of {root} kept moving", hint="run again")


def repoint_packing(store, root: str, old_id: str, new_id: str) -> None:
    """Move the pointer of `root` from `old_id` to `new_id` (compare-and-swap): ConflictError
    when another writer moved it first."""
    current = read_pointer(store, root)
    if current is None or current[0] != old_id:
        raise ConflictError(f"the packing of {root} moved from {old_id} to {current[0] if current else 'nothing'}",
                            hint="run again: it starts from the current packing")
    store.put_if_match(pointer_key(root), new_id.encode("ascii"), current[1])


def index_reader(store, packing: Packing) -> TreeReader:
    return TreeReader(store, packing.index, INDEX)


def shards_reader(store, packing: Packing) -> TreeReader:
    return TreeReader(store, packing.shards, SHARDS)
