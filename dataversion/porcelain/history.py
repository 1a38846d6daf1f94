"""Porcelain: reading history and snapshots (log, show, ls, diff)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import history
from ..objects import ShardRef
from ..records import ids_as_numpy, ids_to_hex
from ..refs import short_ref
from ..shards import shard_key
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
    commit, manifest_id = repo.read_commit(commit_id), repo.manifest_id_of(commit_id)
    d = commit.summary(commit_id)
    manifest = repo.read_manifest(commit_id)
    d["manifest"] = manifest_id
    d["shards"] = len(manifest.shards)
    d["refs"] = sorted(short_ref(k) for k, v in repo.refs.list().items() if v == commit_id)
    return d

def ls(repo: Repo, ref: str, *, columns: tuple[str, ...] = ("record_id", "modality", "source", "label")) -> Iterator[dict[str, Any]]:
    """Every record of a snapshot (metadata only, no payload)."""
    commit_id = repo.resolve(ref)
    read_cols = [c for c in columns if c != "size"] + (["text", "data"] if "size" in columns else [])
    for shard in repo.read_manifest(commit_id).shards:
        table = repo.read_shard_columns(shard, read_cols)
        hexes = ids_to_hex(ids_as_numpy(table.column("record_id")))
        cols = {c: table.column(c).to_pylist() for c in columns if c not in ("record_id", "size")}
        if "size" in columns:
            t_len = pc.binary_length(table.column("text")).to_pylist()
            d_len = pc.binary_length(table.column("data")).to_pylist()
            cols["size"] = [a if a is not None else b for a, b in zip(t_len, d_len)]
        for i, h in enumerate(hexes):
            yield {"record_id": h, **{c: v[i] for c, v in cols.items()}}

def ls_shards(repo: Repo, ref: str) -> list[dict[str, Any]]:
    commit_id = repo.resolve(ref)
    return [{**s.to_dict(), "live_rows": s.live_rows, "key": shard_key(s.id)} for s in repo.read_manifest(commit_id).shards]

def diff(repo: Repo, a: str, b: str, *, records: bool = False) -> dict[str, Any]:
    """Records added and removed from `a` to `b`.

    Shards both snapshots use identically are never read: only shards (or deletion
    vectors) that differ are, so the cost follows the change, not the snapshot size.
    """
    ca, cb = repo.resolve(a), repo.resolve(b)
    ma, mb = repo.read_manifest(ca), repo.read_manifest(cb)
    sa = {s.id: s for s in ma.shards}
    sb = {s.id: s for s in mb.shards}
    cand_a: list[pa.Table] = []
    cand_b: list[pa.Table] = []
    for sid, ref in sa.items():
        other = sb.get(sid)
        if other is None:
            cand_a.append(_diff_rows(repo, ref, None))
        elif other.deleted != ref.deleted:
            da, db = set(ref.deleted), set(other.deleted)
            if db - da:
                cand_a.append(_diff_rows(repo, ref, sorted(db - da)))
            if da - db:
                cand_b.append(_diff_rows(repo, other, sorted(da - db)))
    for sid, ref in sb.items():
        if sid not in sa:
            cand_b.append(_diff_rows(repo, ref, None))
    ta = pa.concat_tables(cand_a) if cand_a else None
    tb = pa.concat_tables(cand_b) if cand_b else None
    ids_a = ids_as_numpy(ta.column("record_id")) if ta is not None else np.empty(0, dtype="S16")
    ids_b = ids_as_numpy(tb.column("record_id")) if tb is not None else np.empty(0, dtype="S16")
    removed_mask = ~np.isin(ids_a, ids_b)
    added_mask = ~np.isin(ids_b, ids_a)
    by_mod: dict[str, dict[str, int]] = {}
    for name, table, mask in (("removed", ta, removed_mask), ("added", tb, added_mask)):
        if table is None:
            continue
        for mod, cnt in Counter(np.asarray(table.column("modality").to_pylist(), dtype=object)[mask].tolist()).items():
            by_mod.setdefault(mod, {"added": 0, "removed": 0})[name] = cnt
    out: dict[str, Any] = {
        "from": ca,
        "to": cb,
        "added": int(added_mask.sum()),
        "removed": int(removed_mask.sum()),
        "by_modality": dict(sorted(by_mod.items())),
        "shards_read": len(cand_a) + len(cand_b),
    }
    if records:
        out["records"] = {
            "added": sorted(ids_to_hex(ids_b[added_mask])),
            "removed": sorted(ids_to_hex(ids_a[removed_mask])),
        }
    return out

def _diff_rows(repo: Repo, shard: ShardRef, rows: list[int] | None) -> pa.Table:
    # erased rows are still held (their ids and metadata): diff counts them like any other
    table = repo.read_shard_columns(shard, ["record_id", "modality"], with_deleted=rows is not None, with_erased=True)
    return table.take(pa.array(rows, pa.int64())) if rows is not None else table
