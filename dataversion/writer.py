"""Plumbing: the commit writer, the one place a snapshot changes.

Write order for every commit: shards -> manifest -> commit -> history chunk -> ref (CAS).
A process killed anywhere before the ref update leaves only unreachable objects (garbage
for `gc`); the branch still names the old, complete commit.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .errors import ConflictError, NotFoundError
from .hashing import DIGEST_MOD, digest_hex, digest_int
from .idset import IdSet
from .inflight import InFlight
from .objectdb import blob_key
from .objects import Commit, Manifest, RecordSummary, ShardRef, utc_now
from .records import conform, ids_as_numpy
from .refs import default_author
from .shards import (
    TARGET_SHARD_BYTES,
    entries_digest_of,
    first_occurrences,
    live_rows,
    modality_counts,
    shard_key,
)

if TYPE_CHECKING:
    from .repo import Repo

DEFAULT_BRANCH = "main"


@dataclass
class CommitResult:
    """What a commit operation did. `commit_id` is None when there was nothing to commit."""

    commit_id: str | None
    branch: str
    parent: str | None
    added: int = 0
    removed: int = 0
    already_present: int = 0
    bytes_written: int = 0
    shards_written: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "commit": self.commit_id,
            "branch": self.branch,
            "parent": self.parent,
            "added": self.added,
            "removed": self.removed,
            "already_present": self.already_present,
            "bytes_written": self.bytes_written,
            "shards_written": self.shards_written,
            "skipped": self.skipped,
        }


def mark_deleted(repo: Repo, shards: list[ShardRef], remove: Callable[[ShardRef, np.ndarray], np.ndarray]) -> tuple[list[ShardRef], int, np.ndarray]:
    """Apply deletions: `remove(shard, ids)` returns a mask of rows to drop."""
    out: list[ShardRef] = []
    removed = 0
    removed_ids = []
    for shard in shards:
        ids = repo.shard_id_column(shard)
        drop = remove(shard, ids)
        if shard.deleted:
            drop[list(shard.deleted)] = False
        n = int(drop.sum())
        if not n:
            out.append(shard)
            continue
        removed += n
        removed_ids.append(ids[drop])
        deleted = tuple(sorted(set(shard.deleted) | set(np.flatnonzero(drop).tolist())))
        if len(deleted) == shard.rows:
            continue
        live = live_rows(repo.read_shard_columns(shard, ["record_id", "modality", "source", "label", "meta"], with_deleted=True), deleted)
        out.append(
            ShardRef(
                id=shard.id, rows=shard.rows, size=shard.size, min_id=shard.min_id, max_id=shard.max_id,
                digest=digest_hex(entries_digest_of(live)), by_modality=modality_counts(live), deleted=deleted,
            )
        )
    return out, removed, (np.concatenate(removed_ids) if removed_ids else np.empty(0, dtype="S16"))

def _write_commit(
    repo: Repo,
    records: pa.Table | None = None,
    *,
    branch: str = DEFAULT_BRANCH,
    message: str = "",
    remove_ids: np.ndarray | list[bytes] | None = None,
    remove_where: Callable[[pa.Table], np.ndarray] | None = None,
    remove_columns: list[str] | None = None,
    counts: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    attachments: dict[str, bytes] | None = None,
    attachment_blobs: dict[str, str] | None = None,
    author: str | None = None,
    expected_parent: str | None | type[...] = ...,
    allow_empty: bool = False,
    target_shard_bytes: int = TARGET_SHARD_BYTES,
    prewritten_shards: list[ShardRef] | None = None,
) -> CommitResult:
    """Append `records` to `branch` (ids already present are not stored again) and/or remove some.

    - `remove_ids`: record ids to drop; `remove_where(table) -> mask` drops rows of the
      parent's shards read with `remove_columns` (e.g. by source prefix).
    - `expected_parent`: if given, the branch must still point there (None: must not exist).
    - `prewritten_shards`: shards already written to the store by distributed workers
      (see `write_shards`); the caller guarantees their records are new to the parent.
    - `attachment_blobs`: attachments already stored (name -> blob id, e.g. objects shared
      with the parent commit); each is freshened, so a concurrent gc keeps it.
    Returns a CommitResult whose commit_id is None when nothing changed (unless allow_empty).
    Raises ConflictError if another writer moved the branch meanwhile.
    """
    ref_name = repo.branch_ref(branch)
    current = repo.refs.read(ref_name)
    parent = current.commit_id if current else None
    if expected_parent is not ... and expected_parent != parent:
        raise ConflictError(f"branch {branch} is at {parent}, expected {expected_parent}", hint="re-run to build on the new tip")
    parent_manifest = repo.read_manifest(parent) if parent else Manifest(RecordSummary(0, digest_hex(0), {}), ())
    parent_ids = repo.record_ids(parent) if parent else IdSet()
    result = CommitResult(None, branch, parent)

    # 1. removals mark rows deleted in existing shards (never rewriting a shard)
    shards = list(parent_manifest.shards)
    removed_ids = np.empty(0, dtype="S16")
    if remove_ids is not None and len(remove_ids):
        want = np.unique(np.asarray(remove_ids, dtype="S16") if not isinstance(remove_ids, np.ndarray) else remove_ids)
        shards, result.removed, removed_ids = mark_deleted(repo, shards, lambda s, ids: np.isin(ids, want))
    if remove_where is not None:
        cols = remove_columns or ["record_id", "source"]

        def by_predicate(shard: ShardRef, ids: np.ndarray) -> np.ndarray:
            table = repo.read_shard_columns(shard, cols, with_deleted=True)
            return np.asarray(remove_where(table), dtype=bool).copy()

        shards, n, more = mark_deleted(repo, shards, by_predicate)
        result.removed += n
        removed_ids = np.concatenate([removed_ids, more])

    # 2. new records: drop duplicates within the batch and ids the parent already holds
    new_table = None
    if records is not None and records.num_rows:
        table = conform(records)
        ids = ids_as_numpy(table.column("record_id"))
        keep = first_occurrences(ids)
        remaining = parent_ids.with_removed(removed_ids) if len(removed_ids) else parent_ids
        present = remaining.contains(ids)
        result.already_present = int((keep & present).sum())
        keep &= ~present
        if keep.all():
            new_table = table
        elif keep.any():
            new_table = table.filter(pa.array(keep))
    new_refs: list[ShardRef] = []
    if new_table is not None:
        new_refs, result.bytes_written = repo.write_shards_counted(new_table, target_shard_bytes)
        result.shards_written = len(new_refs)
        result.added = new_table.num_rows
    for ref in prewritten_shards or ():
        if not repo.store.exists(shard_key(ref.id)):
            raise NotFoundError(f"shard {ref.id} was not written before the commit")
        new_refs.append(ref)
        result.added += ref.live_rows
    if not result.added and not result.removed and not allow_empty:
        return result

    # 3. manifest: parent's shards (with deletions) + new shards. The summary is the
    # parent's plus the shards that came in minus the ones that went out: O(change).
    all_shards = tuple(shards) + tuple(new_refs)
    before = {id(s) for s in parent_manifest.shards}
    after = {id(s) for s in all_shards}
    gone = [s for s in parent_manifest.shards if id(s) not in after]
    came = [s for s in all_shards if id(s) not in before]
    by_mod: Counter[str] = Counter(parent_manifest.records.by_modality)
    digest = digest_int(parent_manifest.records.digest)
    count = parent_manifest.records.count
    for sign, group in ((1, came), (-1, gone)):
        for s in group:
            for k, v in s.by_modality.items():
                by_mod[k] += sign * v
            digest += sign * digest_int(s.digest)
            count += sign * s.live_rows
    summary = RecordSummary(
        count=count,
        digest=digest_hex(digest % DIGEST_MOD),
        by_modality={k: v for k, v in sorted(by_mod.items()) if v},
    )
    manifest = Manifest(summary, all_shards)
    manifest_id = repo.write_manifest(manifest)

    attachment_ids = {name: repo.put_blob(data) for name, data in (attachments or {}).items()}
    for name, blob_id in (attachment_blobs or {}).items():
        repo.store.touch(blob_key(blob_id))
        attachment_ids[name] = blob_id
    base_counts = {"added": result.added, "removed": result.removed, "already_present": result.already_present}
    commit = Commit(
        parents=(parent,) if parent else (),
        author=author or default_author(),
        time=utc_now(),
        message=message,
        records=summary,
        counts={**base_counts, **(counts or {})},
        provenance=provenance or {},
        attachments=attachment_ids,
    )
    commit_id = repo.write_commit(commit, manifest_id)
    repo.write_history(commit_id, commit, parent)

    # 4. the ref: compare-and-swap from the tip we built on
    repo.refs.set_if_equals(ref_name, current, commit_id, reason=f"commit: {message}".strip())
    if not prewritten_shards:
        new_ids = ids_as_numpy(new_table.column("record_id")) if new_table is not None else np.empty(0, dtype="S16")
        child = (parent_ids.with_removed(removed_ids) if len(removed_ids) else parent_ids).with_added(new_ids)
        repo.remember_record_ids(commit_id, child)
    result.commit_id = commit_id
    return result


@functools.wraps(_write_commit)
def commit(repo: Repo, *args: Any, **kwargs: Any) -> CommitResult:
    # In flight: a gc running meanwhile keeps what this commit writes or reuses.
    with InFlight(repo.store, f"commit on {kwargs.get('branch', DEFAULT_BRANCH)}"):
        return _write_commit(repo, *args, **kwargs)
