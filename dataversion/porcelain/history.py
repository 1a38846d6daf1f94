"""Porcelain: reading history and snapshots (log, show, ls, diff)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.compute as pc

from .. import history
from ..objectdb import RowGroup
from ..records import ids_as_numpy, ids_to_hex
from ..refs import short_ref
from ..tree import contains_sorted
from ..writer import DEFAULT_BRANCH

if TYPE_CHECKING:
    from ..repo import Repo


def log(repo: Repo, ref: str = DEFAULT_BRANCH, n: int | None = None) -> list[dict[str, Any]]:
    """Commit summaries from `ref` back along first parents, newest first."""
    commit_id: str | None = repo.resolve(ref)
    out: list[dict[str, Any]] = []
    while commit_id and (n is None or len(out) < n):
        chunk = history.read_chunk(repo.store, commit_id)
        entries = history.checked_entries(chunk, commit_id) if chunk is not None else None
        if not entries:
            commit = repo.read_commit(commit_id)
            out.append(commit.summary(commit_id))
            commit_id = commit.parents[0] if commit.parents else None
            continue
        out.extend(entries if n is None else entries[: n - len(out)])
        commit_id = chunk.next
    return out

def show(repo: Repo, ref: str) -> dict[str, Any]:
    commit_id = repo.resolve(ref)
    commit = repo.read_commit(commit_id)
    d = commit.summary(commit_id)
    packing = repo.read_packing(commit_id)
    d["root"] = commit.root
    d["packing"] = packing.id
    d["shards"] = len(repo.shard_table(packing))
    d["refs"] = sorted(short_ref(k) for k, v in repo.refs.list().items() if v == commit_id)
    return d

def ls(repo: Repo, ref: str, *, columns: tuple[str, ...] = ("record_id", "modality", "source", "label")) -> Iterator[dict[str, Any]]:
    """Every record of a snapshot (metadata only, no payload), read through its checked packing."""
    commit_id = repo.resolve(ref)
    read_cols = [c for c in columns if c not in ("size", "record_id")] + (["text", "data"] if "size" in columns else [])
    for table in repo.read_rows(commit_id, read_cols):
        hexes = ids_to_hex(ids_as_numpy(table.column("record_id")))
        cols = {c: table.column(c).to_pylist() for c in columns if c not in ("record_id", "size")}
        if "size" in columns:
            t_len = pc.binary_length(table.column("text")).to_pylist()
            d_len = pc.binary_length(table.column("data")).to_pylist()
            cols["size"] = [a if a is not None else b for a, b in zip(t_len, d_len)]
        for i, h in enumerate(hexes):
            yield {"record_id": h, **{c: v[i] for c, v in cols.items()}}

def inputs_commit(repo: Repo, commit_id: str) -> str:
    """The newest commit at or before `commit_id` (first parents) that read inputs (`add`,
    `ingest`: its counts have "inputs"): whose rejects and duplicates a ref means after
    commits that read none (`rm`, `revert`). `commit_id` itself when none did."""
    cid: str | None = commit_id
    while cid is not None:
        commit = repo.read_commit(cid)
        if "inputs" in commit.counts:
            return cid
        cid = commit.parents[0] if commit.parents else None
    return commit_id


def ls_shards(repo: Repo, ref: str) -> list[dict[str, Any]]:
    """The shards of a snapshot's packing: id, rows, live rows, size, store key."""
    commit_id = repo.resolve(ref)
    return [s.to_dict() for s in repo.shard_table(repo.read_packing(commit_id))]

def _describe(repo: Repo, commit_id: str, ids: np.ndarray, located: list[RowGroup] | None = None,
              entries: np.ndarray | None = None) -> dict[bytes, dict[str, Any]]:
    """record id -> {record_id, modality, source, label} for records `commit_id` holds.

    `located`: every row group of the commit, already located and checked (a caller that
    reads the whole commit anyway): the ids are found in it instead of through the index.
    `entries`: the content tree's entries (id, digest) of those records, sorted by id: each
    row read is then checked whole against its digest (what `diff --records` prints)."""
    out: dict[bytes, dict[str, Any]] = {}
    if not len(ids):
        return out
    if located is None:
        groups = repo.locate(commit_id, ids)
    else:
        wanted = np.sort(np.asarray(ids, dtype="S16"))
        groups = []
        for g in located:
            hit = contains_sorted(wanted, g.ids)
            if hit.any():
                groups.append(RowGroup(g.shard, g.rows[hit], g.ids[hit], g.key))
    def digests(g: RowGroup) -> np.ndarray | None:
        if entries is None:
            return None
        at = np.searchsorted(entries["id"], g.ids)
        return entries["digest"][np.minimum(at, len(entries) - 1)]

    for table in (repo.read_some_rows(commit_id, g, ["modality", "source", "label"], digests(g)) for g in groups):
        raw = ids_as_numpy(table.column("record_id"))
        cols = zip(table.column("modality").to_pylist(), table.column("source").to_pylist(), table.column("label").to_pylist())
        for i, (mod, src, label) in enumerate(cols):
            rid = raw[i : i + 1].tobytes()
            out[rid] = {"record_id": rid.hex(), "modality": mod, "source": src, "label": label}
    return out

def diff(repo: Repo, a: str, b: str, *, records: bool = False, located_b: list[RowGroup] | None = None) -> dict[str, Any]:
    """Records added, removed and changed (same id, other metadata) from `a` to `b`.

    Walks the two content trees and reads only subtrees that differ (shared nodes are
    skipped unread), then the packing rows of the differing records for their modality:
    the cost follows the change, not the snapshot size. With `records`, each record as a
    dict (record_id, modality, source, label), sorted by id. `located_b`: every row group
    of `b`, where the caller has located them already (`Repo.locate`)."""
    ca, cb = repo.resolve(a), repo.resolve(b)
    only_a, only_b = repo.tree(ca).diff(repo.root_of(cb))
    in_b = np.isin(only_a["id"], only_b["id"])
    removed_ids, changed_ids = only_a["id"][~in_b], only_a["id"][in_b]
    added_ids = only_b["id"][~np.isin(only_b["id"], only_a["id"])]
    # the records printed one by one are checked whole; counts need only their ids checked
    old = _describe(repo, ca, removed_ids, entries=only_a if records else None)
    new = _describe(repo, cb, np.concatenate([added_ids, changed_ids]), located_b, entries=only_b if records else None)
    raw = lambda ids: [ids[i : i + 1].tobytes() for i in range(len(ids))]  # noqa: E731
    by_mod: dict[str, dict[str, int]] = {}
    for name, ids, desc in (("removed", removed_ids, old), ("added", added_ids, new)):
        for mod, cnt in Counter(desc[r]["modality"] for r in raw(ids)).items():
            by_mod.setdefault(mod, {"added": 0, "removed": 0})[name] = cnt
    out: dict[str, Any] = {
        "from": ca,
        "to": cb,
        "added": len(added_ids),
        "removed": len(removed_ids),
        "changed": len(changed_ids),
        "by_modality": dict(sorted(by_mod.items())),
    }
    if records:
        out["records"] = {
            "added": [new[r] for r in raw(added_ids)],
            "removed": [old[r] for r in raw(removed_ids)],
            "changed": [new[r] for r in raw(changed_ids)],
        }
    return out
