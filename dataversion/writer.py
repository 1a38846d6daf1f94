"""Plumbing: the commit writer, the one place a snapshot changes.

Write order for every commit: shards -> content-tree nodes -> packing (index and shard
table nodes, the packing object, its pointer) -> commit -> history chunk -> ref (CAS).
A process killed anywhere before the ref update leaves only unreachable objects (garbage
for `gc`); the branch still names the old, complete commit.

Cost follows the change: membership ("does the parent hold these ids"), deletions and the
packing's index are tree lookups and tree updates on the changed paths only; no parent
shard's id column is read and no list of every shard is rewritten.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .denylist import ERASED, denied_ids, denied_mask
from .errors import ConflictError, CorruptObjectError, DataversionError, NotFoundError
from .inflight import InFlight
from .objectdb import blob_key
from .objects import Commit, RecordSummary, ShardRef, utc_now
from .packing import Packing, point_packing, shard_prefix, shard_table_key, shards_reader
from .porcelain.erase import after_commit
from .records import conform, ids_as_numpy, ids_to_hex
from .refs import default_author
from .shards import TARGET_SHARD_BYTES, entry_digests, first_occurrences, modality_counts, shard_key
from .tree import EMPTY_ROOT, ENTRY, INDEX, SHARDS, NodeBatch, TreeWriter

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
    # inputs not stored because another input of the same content was (`add`): each as
    # `duplicates` lists them (source, duplicate_of: the kept record id, kind "exact")
    duplicates: list[dict[str, Any]] = field(default_factory=list)

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
            "duplicates": self.duplicates,
        }


@dataclass
class _Change:
    """What a commit changes: entries in, ids out, and the packing rows of both."""

    content: list[np.ndarray] = field(default_factory=list)  # ENTRY arrays added
    index: list[np.ndarray] = field(default_factory=list)  # INDEX arrays added
    new_shards: list[tuple[str, int, int]] = field(default_factory=list)  # (shard id, rows, size)
    removed: np.ndarray = field(default_factory=lambda: np.empty(0, dtype="S16"))
    shard_losses: Counter = field(default_factory=Counter)  # shard id -> rows no longer live
    shard_keys: dict = field(default_factory=dict)  # shard id -> its 12-byte index prefix
    modalities: Counter = field(default_factory=Counter)  # net change by modality

    def add_rows(self, shard_id: str, ids: np.ndarray, digests: np.ndarray, size: int, mods: dict[str, int]) -> None:
        e = np.zeros(len(ids), dtype=ENTRY)
        e["id"], e["digest"] = ids, digests
        ix = np.zeros(len(ids), dtype=INDEX)
        ix["id"], ix["shard"], ix["row"] = ids, shard_prefix(shard_id), np.arange(len(ids), dtype=np.uint32)
        self.content.append(e)
        self.index.append(ix)
        self.new_shards.append((shard_id, len(ids), size))
        self.modalities.update(mods)


def _removals(repo: Repo, parent: str, change: _Change, ids: np.ndarray | None, where: Callable[[pa.Table], np.ndarray] | None,
              columns: list[str]) -> None:
    """Find the parent's records to remove (by id: tree lookups; by predicate: a scan of the
    columns it needs) and note their shards' lost rows and their modalities."""
    groups = []
    if ids is not None and len(ids):
        want = np.unique(np.asarray(ids, dtype="S16"))
        held = want[repo.contains(parent, want)]
        if len(held):
            groups = repo.locate(parent, held, with_erased=True)
    elif where is not None:
        groups = repo.locate(parent, with_erased=True)
    cols = list(dict.fromkeys(["record_id", "modality", *columns]))
    gone = []
    for g in groups:
        if where is None:  # by id: only the row groups holding them (their modality counts)
            t = repo.read_some_rows(parent, g, cols)
        else:
            t = repo.read_shard_columns(g.shard, cols).take(pa.array(g.rows))
            repo.check_rows(parent, g, ids_as_numpy(t.column("record_id")))
        if where is not None and ids is None:
            mask = np.asarray(where(t.select(columns)), dtype=bool)
            if not mask.any():
                continue
            t = t.filter(pa.array(mask))
        gone.append(ids_as_numpy(t.column("record_id")).copy())
        change.shard_losses[g.shard] += t.num_rows
        if g.key is not None:
            change.shard_keys[g.shard] = g.key
        for mod, n in modality_counts(t).items():
            change.modalities[mod] -= n
    if gone:
        change.removed = np.unique(np.concatenate([change.removed, *gone]))


def _shard_table_update(repo: Repo, packing: Packing, change: _Change, writer: TreeWriter) -> str:
    """The new shard table root: new shards in, live counts of shards that lost rows down
    (a shard with no live row left is dropped: garbage for gc)."""
    touched = {s: 0 for s in change.shard_losses}
    for sid, _, _ in change.new_shards:
        touched.setdefault(sid, 0)
    def key_of(sid: str) -> bytes:  # an erasure's rewrite keeps the prefix of the shard it replaced
        prefix = change.shard_keys.get(sid)
        return shard_table_key(sid) if prefix is None else prefix + b"\x00" * (16 - len(prefix))

    keys = np.array([key_of(s) for s in touched], dtype="S16")
    found, current = shards_reader(repo.store, packing).lookup(keys)
    ups, dels = [], []
    new = {sid: (rows, size) for sid, rows, size in change.new_shards}
    raw = np.ascontiguousarray(current["shard"]).tobytes()
    for i, (sid, hit, cur) in enumerate(zip(touched, found, current)):
        full = raw[16 * i : 16 * i + 16].hex() if hit else None
        if hit and full != sid:
            raise CorruptObjectError(f"shard {sid} and shard {full} share a 12-byte prefix", hint="report this: a 96-bit collision")
        rows, live, size = (int(cur["rows"]), int(cur["live"]), int(cur["size"])) if hit else (0, 0, 0)
        if sid in new:
            rows, size = new[sid]
            live = min(rows, live + rows)
        live -= change.shard_losses.get(sid, 0)
        if live <= 0:
            dels.append(key_of(sid))
        else:
            e = np.zeros(1, dtype=SHARDS)
            e[0] = (key_of(sid), bytes.fromhex(sid), rows, live, size)
            ups.append(e)
    return writer.apply(packing.shards, np.concatenate(ups) if ups else None,
                        np.array(dels, dtype="S16") if dels else None, flush=False)


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
    prewritten_rows: list[tuple[ShardRef, np.ndarray, np.ndarray]] | None = None,
) -> CommitResult:
    """Append `records` to `branch` (ids already present are not stored again) and/or remove some.

    - `remove_ids`: record ids to drop; `remove_where(table) -> mask` drops the parent's
      records for which it is True, given their `remove_columns` (e.g. by source prefix).
    - `expected_parent`: if given, the branch must still point there (None: must not exist).
    - `prewritten_shards`: shards already written to the store by distributed workers
      (see `write_shards`); the caller guarantees their records are new to the parent.
    - `prewritten_rows`: the same, with each shard's record ids and entry digests in shard
      row order, known to the caller (a streaming `add`): nothing is read back.
    - `attachment_blobs`: attachments already stored (name -> blob id, e.g. objects shared
      with the parent commit); each is freshened, so a concurrent gc keeps it.
    Returns a CommitResult whose commit_id is None when nothing changed (unless allow_empty).
    Raises ConflictError if another writer moved the branch meanwhile.
    """
    ref_name = repo.branch_ref(branch)
    current = repo.refs.read(ref_name)
    parent = current.commit_id if current else None
    if expected_parent is not ... and expected_parent != parent:
        now = f"is at {parent[:12]}" if parent else "does not exist any more"
        was = f"at {expected_parent[:12]}" if expected_parent else "not there yet"
        raise ConflictError(f"branch {branch} {now}: another writer moved it while this one worked (it found it {was})",
                            hint="re-run to build on the new tip; nothing was committed")
    base = repo.read_commit(parent).records if parent else RecordSummary(0, EMPTY_ROOT, {})
    packing = repo.read_packing(parent) if parent else Packing(EMPTY_ROOT, 0)
    result = CommitResult(None, branch, parent)
    change = _Change()

    # 1. removals: tree lookups (by id) or a scan of the columns a predicate needs
    if parent is not None and ((remove_ids is not None and len(remove_ids)) or remove_where is not None):
        if remove_ids is not None and len(remove_ids):
            _removals(repo, parent, change, np.asarray(remove_ids, dtype="S16"), None, [])
        if remove_where is not None:
            _removals(repo, parent, change, None, remove_where, remove_columns or ["record_id", "source"])
    result.removed = len(change.removed)

    # 2. new records: drop duplicates within the batch and ids the parent already holds
    new_table = None
    if records is not None and records.num_rows:
        table = conform(records)
        ids = ids_as_numpy(table.column("record_id"))
        keep = first_occurrences(ids)
        erased = denied_mask(ids, denied_ids(repo.store))
        if erased.any():  # content an erasure removed stays out (the caller counts rejects)
            result.skipped = [{"source": s or "", "reason": ERASED, "record_id": h}
                              for s, h in zip(table.column("source").filter(pa.array(erased)).to_pylist(),
                                              ids_to_hex(ids[erased]))]
            keep &= ~erased
        present = repo.contains(parent, ids)
        if len(change.removed):
            present &= ~np.isin(ids, change.removed)
        result.already_present = int((keep & present).sum())
        keep &= ~present
        if keep.all():
            new_table = table
        elif keep.any():
            new_table = table.filter(pa.array(keep))
    if new_table is not None:
        # the shards are encoded and stored in threads (Parquet releases the GIL) while this
        # thread hashes the records for the content tree
        with ThreadPoolExecutor(max_workers=1) as pool:
            writing = pool.submit(repo.write_shards_counted, new_table, target_shard_bytes)
            digests = entry_digests(new_table)
            refs, result.bytes_written, parts = writing.result()
        result.shards_written = len(refs)
        result.added = new_table.num_rows
        new_ids = ids_as_numpy(new_table.column("record_id"))
        for ref, rows in zip(refs, parts):
            change.add_rows(ref.id, new_ids[rows], digests[rows], ref.size, ref.by_modality)
    for ref in prewritten_shards or ():
        if not repo.store.exists(shard_key(ref.id)):
            raise NotFoundError(f"shard {ref.id} was not written before the commit")
        t = repo.read_shard(ref.id)
        change.add_rows(ref.id, ids_as_numpy(t.column("record_id")).copy(), entry_digests(t), ref.size, modality_counts(t))
        result.added += t.num_rows
    for ref, ids, digests in prewritten_rows or ():
        change.add_rows(ref.id, ids, digests, ref.size, ref.by_modality)
        result.added += len(ids)
        result.shards_written += 1
    if not result.added and not result.removed and not allow_empty:
        return result

    # 3. the content tree, then the packing (index, shard table, object, pointer)
    ups = np.concatenate(change.content) if change.content else None
    dels = change.removed if len(change.removed) else None
    nodes = NodeBatch()  # the three trees' new nodes, stored in one pack
    root = TreeWriter(repo.store, ENTRY, pending=nodes).apply(base.digest, ups, dels, flush=False)
    index_root = TreeWriter(repo.store, INDEX, pending=nodes).apply(
        packing.index, np.concatenate(change.index) if change.index else None, dels, flush=False)
    shards_writer = TreeWriter(repo.store, SHARDS, pending=nodes)
    shards_root = _shard_table_update(repo, packing, change, shards_writer)
    count = base.count + result.added - result.removed
    new_packing = Packing(root, count, index_root, shards_root, packing.erased)  # erased stay erased
    by_mod: Counter[str] = Counter(base.by_modality)
    by_mod.update(change.modalities)
    summary = RecordSummary(count=count, digest=root, by_modality={k: v for k, v in sorted(by_mod.items()) if v})

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
    # the new nodes, the packing, the commit and its history chunk: one durable batch, then
    # the packing pointer (compare-and-swap), then the ref
    commit_id, objects = repo.staged_commit(commit, parent, new_packing if root != EMPTY_ROOT else None)
    shards_writer.flush(extra=objects)
    if root != EMPTY_ROOT:
        point_packing(repo.store, root, new_packing.id)

    # 4. the ref: compare-and-swap from the tip we built on
    repo.refs.set_if_equals(ref_name, current, commit_id, reason=f"commit: {message}".strip())
    # 5. an erasure that ran meanwhile may have replaced a shard this packing took from the
    # parent's, or denied content the commit holds: erase it here too
    try:
        after_commit(repo, commit_id)
    except DataversionError as e:
        raise DataversionError(f"commit {commit_id} landed on {branch}, but erasing from it failed: {e}",
                               hint="run `dataversion erase --resume`") from e
    result.commit_id = commit_id
    return result


@functools.wraps(_write_commit)
def commit(repo: Repo, *args: Any, **kwargs: Any) -> CommitResult:
    # In flight: a gc running meanwhile keeps what this commit writes or reuses.
    with InFlight(repo.store, f"commit on {kwargs.get('branch', DEFAULT_BRANCH)}"):
        return _write_commit(repo, *args, **kwargs)
