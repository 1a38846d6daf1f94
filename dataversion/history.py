"""History chunks: `log` in a few reads instead of one read per commit.

For each commit we write `history/<commit_id>.json`: the summaries of that commit and its
first-parent ancestors, up to CHUNK entries, and the id of the commit where the chain
continues. A new commit copies its parent's chunk while it has room, else starts a new one,
so `log` of n commits reads about n / CHUNK objects. Chunks are derived data (rebuildable
from commits); if one is missing, `log` falls back to reading commits one by one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import NotFoundError
from .hashing import canonical_json
from .objects import Commit
from .stores.base import Store

CHUNK = 128


def history_key(commit_id: str) -> str:
    return f"history/{commit_id}.json"


@dataclass(frozen=True)
class Chunk:
    """A history chunk kept as canonical JSON text of its entries, so a child chunk is built
    by prepending one entry instead of re-serializing up to CHUNK summaries."""

    entries_text: str  # canonical JSON of the entries, without the surrounding brackets
    count: int
    next: str | None

    def to_bytes(self) -> bytes:
        nxt = canonical_json(self.next).decode()
        return ('{"entries":[' + self.entries_text + '],"next":' + nxt + "}").encode("utf-8")

    def entries(self) -> list[dict[str, Any]]:
        return json.loads("[" + self.entries_text + "]")


def build_chunk(summary: dict[str, Any], parent_chunk: Chunk | None, parent_id: str | None) -> Chunk:
    """The chunk of a new commit whose first parent has `parent_chunk` (None if unknown)."""
    entry = canonical_json(summary).decode("utf-8")
    if parent_id is None:
        return Chunk(entry, 1, None)
    if parent_chunk is not None and parent_chunk.count < CHUNK:
        return Chunk(entry + "," + parent_chunk.entries_text, parent_chunk.count + 1, parent_chunk.next)
    return Chunk(entry, 1, parent_id)


def parse_chunk(data: bytes) -> Chunk:
    d = json.loads(data)
    entries = d["entries"]
    return Chunk(canonical_json(entries).decode("utf-8")[1:-1], len(entries), d["next"])


def checked_entries(chunk: Chunk, commit_id: str) -> list[dict[str, Any]] | None:
    """The chunk's entries if each one hashes to its commit id and they chain from
    `commit_id` along first parents to `chunk.next`; None if any does not (a chunk is
    derived data: the caller reads the commits themselves instead)."""
    try:
        entries = chunk.entries()
        expected: str | None = commit_id
        for e in entries:
            fields = {k: v for k, v in e.items() if k != "id"}
            if e.get("id") != expected or Commit.from_dict(fields).id != expected:
                return None
            expected = e["parents"][0] if e["parents"] else None
        if expected != chunk.next:
            return None
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
    return entries


def read_chunk(store: Store, commit_id: str) -> Chunk | None:
    try:
        return parse_chunk(store.get(history_key(commit_id)))
    except (NotFoundError, ValueError, KeyError):
        return None


def write_chunk(store: Store, commit_id: str, chunk: Chunk) -> None:
    store.put(history_key(commit_id), chunk.to_bytes())
