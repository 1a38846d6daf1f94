"""History chunks: `log` in a few reads instead of one read per commit.

For each commit we write `history/<commit_id>.json`: the summaries of that commit and its
first-parent ancestors, up to CHUNK entries, and the id of the commit where the chain
continues. A new commit copies its parent's chunk while it has room, else starts a new one,
so `log` of n commits reads about n / CHUNK objects. Chunks are derived data (rebuildable
from commits); if one is missing, `log` falls back to reading commits one by one.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import NotFoundError
from .hashing import canonical_json
from .stores.base import Store

CHUNK = 128


def history_key(commit_id: str) -> str:
    return f"history/{commit_id}.json"


def build_chunk(summary: dict[str, Any], parent_chunk: dict[str, Any] | None, parent_id: str | None) -> dict[str, Any]:
    """The chunk of a new commit whose first parent has `parent_chunk` (None if unknown)."""
    if parent_id is None:
        return {"entries": [summary], "next": None}
    if parent_chunk is not None and len(parent_chunk["entries"]) < CHUNK:
        return {"entries": [summary, *parent_chunk["entries"]], "next": parent_chunk["next"]}
    return {"entries": [summary], "next": parent_id}


def read_chunk(store: Store, commit_id: str) -> dict[str, Any] | None:
    try:
        return json.loads(store.get(history_key(commit_id)))
    except (NotFoundError, ValueError):
        return None


def write_chunk(store: Store, commit_id: str, chunk: dict[str, Any]) -> None:
    store.put(history_key(commit_id), canonical_json(chunk))
