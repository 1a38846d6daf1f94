"""Plumbing: reading and writing the repository's objects by id, with caches.

Objects are immutable and content-addressed: commits (`commits/<id>.json`), manifests
(`manifests/<id>.json`), shards (`shards/<id>.parquet`), blobs (`blobs/<id>`). Nothing here
knows about refs or the operations users call; `dataversion.repo.Repo` builds on it.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pyarrow as pa

from . import history
from .errors import CorruptObjectError, NotFoundError
from .hashing import digest_hex, object_id
from .idset import IdSet
from .objects import Commit, Manifest, ShardRef
from .records import conform, ids_as_numpy
from .shards import (
    ENTRY_COLUMNS,
    TARGET_SHARD_BYTES,
    decode_shard,
    describe_shard,
    entries_digest_of,
    entry_limbs,
    limbs_digest,
    live_rows,
    parquet_bytes,
    payload_mismatches,
    plan_shard_rows,
    served_rows,
    shard_key,
)
from .stores import Store


def commit_key(commit_id: str) -> str:
    return f"commits/{commit_id}.json"


def manifest_key(manifest_id: str) -> str:
    return f"manifests/{manifest_id}.json"


def blob_key(blob_id: str) -> str:
    return f"blobs/{blob_id}"



class _LRU(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class ObjectDB:
    """The objects of one repository's store: typed reads (checked against their ids) and writes."""

    def __init__(self, store: Store):
        self.store = store
        self.url = store.url
        self._commits: _LRU = _LRU(4096)
        self._manifests: _LRU = _LRU(64)
        self._idsets: _LRU = _LRU(4)
        self._shard_ids: _LRU = _LRU(256)
        self._chunks: _LRU = _LRU(16)

    def read_commit(self, commit_id: str) -> Commit:
        return self._read_commit_and_manifest_id(commit_id)[0]

    def manifest_id_of(self, commit_id: str) -> str:
        return self._read_commit_and_manifest_id(commit_id)[1]

    def _read_commit_and_manifest_id(self, commit_id: str) -> tuple[Commit, str]:
        commit, manifest_id, _ = self.read_stored_commit(commit_id)
        return commit, manifest_id

    def read_stored_commit(self, commit_id: str) -> tuple[Commit, str, dict[str, str]]:
        """(commit, manifest id, attachment overrides) of a stored commit (cached)."""
        cached = self._commits.get(commit_id)
        if cached is not None:
            return cached
        try:
            data = self.store.get(commit_key(commit_id))
        except NotFoundError:
            raise NotFoundError(f"commit {commit_id} not found in {self.url}") from None
        value = Commit.read_stored(data, commit_id)
        self._commits.put(commit_id, value)
        return value

    def attachment_ids(self, commit_id: str) -> dict[str, str]:
        """The blob id of each attachment of a commit, as readers use them (an erasure's
        rewritten blobs in place of the ones the commit id names)."""
        commit, _, overrides = self.read_stored_commit(commit_id)
        return {**commit.attachments, **overrides}

    def forget_commit(self, commit_id: str) -> None:
        """Drop what this process cached about a commit whose packing was re-pointed."""
        self._commits.pop(commit_id, None)
        self._idsets.pop(commit_id, None)

    def read_manifest(self, commit_id: str) -> Manifest:
        """The manifest (shard list) of a commit, checked against the commit's record summary.

        The manifest pointer sits beside the commit's hashed fields, so a swapped pointer
        would serve another commit's records: CorruptObjectError naming both instead.
        """
        commit, manifest_id = self._read_commit_and_manifest_id(commit_id)
        manifest = self._manifests.get(manifest_id)
        if manifest is None:
            try:
                data = self.store.get(manifest_key(manifest_id))
            except NotFoundError:
                raise NotFoundError(f"manifest {manifest_id} of commit {commit_id} is missing from {self.url}", hint="run `dataversion verify`") from None
            manifest = Manifest.from_bytes(data, manifest_id)
            self._manifests.put(manifest_id, manifest)
        if manifest.records != commit.records:
            raise CorruptObjectError(
                f"manifest {manifest_id} does not hold the records commit {commit_id} names "
                f"({manifest.records.count} records vs {commit.records.count}, digests differ)",
                hint="run `dataversion verify`; restore the manifest or reset the branch",
            )
        return manifest

    def read_shard_bytes(self, shard: ShardRef | str) -> bytes:
        """The bytes of a shard, checked against its name (CorruptObjectError if they differ)."""
        shard_id = shard.id if isinstance(shard, ShardRef) else shard
        try:
            data = self.store.get(shard_key(shard_id))
        except NotFoundError:
            raise NotFoundError(f"shard {shard_id} is missing from {self.url}", hint="run `dataversion verify`") from None
        actual = object_id(data)
        if actual != shard_id:
            raise CorruptObjectError(f"shard {shard_id} is corrupt: its bytes hash to {actual}", hint="run `dataversion verify`")
        return data

    def read_shard(self, shard: ShardRef, columns: list[str] | None = None, *, with_deleted: bool = False,
                   with_erased: bool = False) -> pa.Table:
        """The rows of a shard that readers serve (deleted and erased rows dropped).

        `with_erased`: keep erased rows (their payload is null); `with_deleted`: every row.

        The whole object is read and hashed against the shard's name before anything is
        decoded, so no reader serves bytes the commit does not name.
        """
        table = decode_shard(self.read_shard_bytes(shard), shard.id, columns)
        if table.num_rows != shard.rows:
            raise CorruptObjectError(f"shard {shard.id} has {table.num_rows} rows, its manifest says {shard.rows}")
        if with_deleted:
            return table
        return live_rows(table, shard.deleted) if with_erased else served_rows(table, shard)

    def read_shard_columns(self, shard: ShardRef, columns: list[str], *, with_deleted: bool = False,
                           with_erased: bool = False) -> pa.Table:
        """Some columns of a shard, checked before they are served.

        On a local disk the whole shard is hashed (cheap). On a remote store only the columns
        are fetched (ranged reads), with the entry columns (id + metadata) added so their
        digest can be checked against the manifest's, and payloads checked against their ids.
        """
        if self.store.local_path(shard_key(shard.id)) is not None:
            return self.read_shard(shard, columns, with_deleted=with_deleted, with_erased=with_erased)
        import pyarrow.parquet as pq

        payloads = ["text", "data"] if {"text", "data"} & set(columns) else []
        wanted = list(dict.fromkeys([*columns, *ENTRY_COLUMNS, *payloads]))
        try:
            with self.store.open_input(shard_key(shard.id)) as f:
                table = pq.ParquetFile(f).read(columns=wanted)
        except NotFoundError:
            raise NotFoundError(f"shard {shard.id} is missing from {self.url}", hint="run `dataversion verify`") from None
        except (pa.ArrowInvalid, OSError) as e:
            raise CorruptObjectError(f"shard {shard.id} is not a readable Parquet file: {e}") from e
        if table.num_rows != shard.rows:
            raise CorruptObjectError(f"shard {shard.id} has {table.num_rows} rows, its manifest says {shard.rows}")
        live = live_rows(table, shard.deleted)
        if digest_hex(entries_digest_of(live)) != shard.digest:
            raise CorruptObjectError(f"shard {shard.id} is corrupt: its records do not match the manifest's digest", hint="run `dataversion verify`")
        if payloads:
            bad = payload_mismatches(table)
            if len(bad):
                raise CorruptObjectError(f"shard {shard.id} is corrupt: {len(bad)} payload(s) do not hash to their record id", hint="run `dataversion verify`")
        out = table if with_deleted else (live if with_erased else served_rows(table, shard))
        return out.select(columns)

    def shard_id_column(self, shard: ShardRef) -> np.ndarray:
        """All record ids of a shard (deleted rows included), cached."""
        ids = self._shard_ids.get(shard.id)
        if ids is None:
            table = self.read_shard_columns(shard, ["record_id"], with_deleted=True)  # erased rows too
            ids = ids_as_numpy(table.column("record_id")).copy()
            self._shard_ids.put(shard.id, ids)
        return ids

    def record_ids(self, commit_id: str) -> IdSet:
        """The set of record ids a commit holds (cached per commit)."""
        cached = self._idsets.get(commit_id)
        if cached is not None:
            return cached
        parts = []
        for shard in self.read_manifest(commit_id).shards:
            ids = self.shard_id_column(shard)
            if shard.deleted:
                mask = np.ones(len(ids), dtype=bool)
                mask[list(shard.deleted)] = False
                ids = ids[mask]
            parts.append(ids)
        idset = IdSet(np.concatenate(parts) if parts else None)
        self._idsets.put(commit_id, idset)
        return idset

    def write_manifest(self, manifest: Manifest) -> str:
        """Store a manifest by content (once); its id."""
        data = manifest.to_bytes()
        manifest_id = object_id(data)
        self._put_or_freshen(manifest_key(manifest_id), data)
        self._manifests.put(manifest_id, manifest)
        return manifest_id

    def write_commit(self, commit: Commit, manifest_id: str) -> str:
        """Store a commit pointing at its manifest (once); its id."""
        commit_id = commit.id
        self._put_or_freshen(commit_key(commit_id), commit.to_stored_bytes(manifest_id))
        self._commits.put(commit_id, (commit, manifest_id, {}))
        return commit_id

    def write_history(self, commit_id: str, commit: Commit, parent: str | None) -> None:
        """Store the history chunk that lets `log` read many commits per request."""
        parent_chunk = (self._chunks.get(parent) or history.read_chunk(self.store, parent)) if parent else None
        chunk = history.build_chunk(commit.summary(commit_id), parent_chunk, parent)
        history.write_chunk(self.store, commit_id, chunk)
        self._chunks.put(commit_id, chunk)

    def remember_record_ids(self, commit_id: str, ids: IdSet) -> None:
        """Cache the id set of a commit just written (saves rereading its shards)."""
        self._idsets.put(commit_id, ids)

    def put_blob(self, data: bytes) -> str:
        """Store an attachment (rejects table, consumed-inputs list...) by content; returns its id."""
        blob_id = object_id(data)
        self._put_or_freshen(blob_key(blob_id), data)
        return blob_id

    def _put_or_freshen(self, key: str, data: bytes) -> bool:
        """Store a content-addressed object once. If it is already there, refresh its mtime
        (git's freshen) so a gc that runs while this write is in flight keeps it. True if
        the bytes were written."""
        if self.store.put_if_absent(key, data):
            return True
        self.store.touch(key)
        return False

    def read_blob(self, blob_id: str) -> bytes:
        data = self.store.get(blob_key(blob_id))
        if object_id(data) != blob_id:
            raise CorruptObjectError(f"blob {blob_id} is corrupt")
        return data

    def read_attachment(self, commit_id: str, name: str) -> bytes | None:
        blob_id = self.attachment_ids(commit_id).get(name)
        return self.read_blob(blob_id) if blob_id else None

    # ------------------------------------------------------------------ writing
    def write_shards(self, table: pa.Table, target_bytes: int = TARGET_SHARD_BYTES) -> list[ShardRef]:
        """Write a record table as shards (sorted, content-addressed) without committing.

        For distributed writers: each worker writes the shards of its id range, the driver
        passes the refs to `commit(prewritten_shards=...)`.
        """
        return self.write_shards_counted(conform(table), target_bytes)[0]

    def write_shards_counted(self, table: pa.Table, target_bytes: int = TARGET_SHARD_BYTES) -> tuple[list[ShardRef], int]:
        """`write_shards` of a conformed table, also returning the bytes newly stored."""
        # Worker threads gather, encode and store each shard (Arrow, Parquet and file I/O
        # release the GIL) while this thread hashes the entries of every row: both cores busy.
        from concurrent.futures import ThreadPoolExecutor

        def encode_and_store(rows: np.ndarray) -> tuple[pa.Table, bytes, int]:
            part = table.take(pa.array(rows))
            data = parquet_bytes(part)
            written = self._put_or_freshen(shard_key(object_id(data)), bytes(data))
            return part, data, len(data) if written else 0

        refs: list[ShardRef] = []
        written = 0
        order, cuts = plan_shard_rows(table, target_bytes)
        if table.num_rows < 4096:
            limbs = entry_limbs(table)
            for a, b in cuts:
                part, data, n = encode_and_store(order[a:b])
                written += n
                refs.append(describe_shard(part, data, limbs_digest(limbs[order[a:b]])))
            return refs, written
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(encode_and_store, order[a:b]) for a, b in cuts]
            limbs = entry_limbs(table)
            for (a, b), fut in zip(cuts, futures):
                part, data, n = fut.result()
                written += n
                ref = describe_shard(part, data, limbs_digest(limbs[order[a:b]]))
                refs.append(ref)
                self._shard_ids.put(ref.id, ids_as_numpy(part.column("record_id")).copy())
        return refs, written

