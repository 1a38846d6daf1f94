"""Plumbing: reading and writing the repository's objects by id, with caches.

Objects are immutable and content-addressed: commits (`commits/<sha256>.json`), content-tree
and packing-tree nodes (`tree/<sha256>`), packings (`packings/<sha256>.json`, found through
the pointer `packing/<root>`), shards (`shards/<xx>/<id>.parquet`), blobs (`blobs/<id>`).
Nothing here knows about refs or the operations users call; `dataversion.repo.Repo` builds
on it. Every read is checked: objects against their names, a packing against the commit's
content root, the rows read from shards against the ids the content tree holds.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from . import history
from .errors import CorruptObjectError, NotFoundError
from .hashing import object_id
from .idset import IdSet
from .objects import Commit, ShardRef
from .packing import (
    Packing,
    ShardInfo,
    index_reader,
    packing_key,
    read_pointer,
    shard_infos,
    shard_table_key,
    shards_reader,
)
from .records import conform, ids_as_numpy
from .shards import (
    ENTRY_COLUMNS,
    TARGET_SHARD_BYTES,
    decode_shard,
    describe_shard,
    entry_digests,
    indices,
    parquet_bytes,
    plan_shard_rows,
    rows_of_row_groups,
    shard_key,
)
from .stores import Store
from .tree import EMPTY_ROOT, ENTRY, TreeReader


def commit_key(commit_id: str) -> str:
    return f"commits/{commit_id}.json"


def attachment_overrides_key(commit_id: str) -> str:
    return f"attachment-overrides/{commit_id}.json"


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


class RowGroup:
    """Rows of one shard that a snapshot holds: shard id, row numbers, and the record ids
    those rows must carry (sorted by row)."""

    __slots__ = ("shard", "rows", "ids", "key")

    def __init__(self, shard: str, rows: np.ndarray, ids: np.ndarray, key: bytes | None = None):
        self.shard, self.rows, self.ids = shard, rows, ids
        # the 12-byte shard prefix the index names these rows by (an erasure's rewrite of a
        # shard keeps the prefix of the shard it replaced)
        self.key = key


def _erased_ids(packing: Packing) -> np.ndarray:
    return np.array(sorted(bytes.fromhex(h) for h in packing.erased), dtype="S16")


class ObjectDB:
    """The objects of one repository's store: typed reads (checked against their ids) and writes."""

    def __init__(self, store: Store):
        self.store = store
        self.url = store.url
        self._commits: _LRU = _LRU(4096)
        self._packings: _LRU = _LRU(64)
        self._shard_tables: _LRU = _LRU(16)
        self._chunks: _LRU = _LRU(16)

    # ------------------------------------------------------------------ commits and content
    def read_commit(self, commit_id: str) -> Commit:
        cached = self._commits.get(commit_id)
        if cached is not None:
            return cached
        try:
            data = self.store.get(commit_key(commit_id))
        except NotFoundError:
            raise NotFoundError(f"commit {commit_id} not found in {self.url}") from None
        commit = Commit.from_stored_bytes(data, commit_id)
        self._commits.put(commit_id, commit)
        return commit

    def root_of(self, commit_id: str) -> str:
        """The content-tree root a commit names."""
        return self.read_commit(commit_id).root

    def tree(self, commit_id: str) -> TreeReader:
        """The content tree of a commit (record id -> digest)."""
        return TreeReader(self.store, self.root_of(commit_id), ENTRY)

    def contains(self, commit_id: str | None, ids: np.ndarray) -> np.ndarray:
        """Which of `ids` ('S16') the commit holds: a tree lookup, O(len(ids) x log N) reads
        (what ingest, `add` and dedup need; never reads the snapshot's id column).
        `commit_id` None (no commit yet) holds nothing."""
        ids = np.asarray(ids, dtype="S16")
        if commit_id is None:
            return np.zeros(len(ids), dtype=bool)
        return self.tree(commit_id).contains(ids)

    def record_ids(self, commit_id: str) -> IdSet:
        """Every record id of a commit (reads the whole content tree: prefer `contains`)."""
        return IdSet(self.tree(commit_id).entries()["id"].copy(), presorted=True)

    # ------------------------------------------------------------------ packing
    def packing_id_of(self, commit_id: str) -> str:
        root = self.root_of(commit_id)
        found = read_pointer(self.store, root)
        if found is None:
            if root == EMPTY_ROOT:
                return Packing(EMPTY_ROOT, 0).id
            raise NotFoundError(f"the packing of commit {commit_id} (content root {root}) is missing from {self.url}",
                                hint="run `dataversion verify`")
        return found[0]

    def read_packing(self, commit_id: str) -> Packing:
        """The packing of a commit, checked against the commit's content root and count.

        A packing for another root (a swapped pointer) is CorruptObjectError naming both."""
        commit = self.read_commit(commit_id)
        packing_id = self.packing_id_of(commit_id)
        packing = self._packings.get(packing_id)
        if packing is None:
            if commit.root == EMPTY_ROOT and packing_id == Packing(EMPTY_ROOT, 0).id:
                packing = Packing(EMPTY_ROOT, 0)
            else:
                try:
                    data = self.store.get(packing_key(packing_id))
                except NotFoundError:
                    raise NotFoundError(f"packing {packing_id} of commit {commit_id} is missing from {self.url}",
                                        hint="run `dataversion verify`") from None
                packing = Packing.from_bytes(data, packing_id)
            self._packings.put(packing_id, packing)
        if packing.root != commit.root or packing.count != commit.records.count:
            raise CorruptObjectError(
                f"packing {packing_id} does not pack the records commit {commit_id} names "
                f"(root {packing.root[:16]}.. with {packing.count} records vs {commit.root[:16]}.. with {commit.records.count})",
                hint="run `dataversion verify`; restore the packing pointer or repack",
            )
        return packing

    def shard_table(self, packing: Packing) -> list[ShardInfo]:
        """Every shard of a packing (reads its shard table)."""
        cached = self._shard_tables.get(packing.shards)
        if cached is None:
            cached = shard_infos(shards_reader(self.store, packing).entries())
            self._shard_tables.put(packing.shards, cached)
        return cached

    def _full_shard_ids(self, packing: Packing, prefixes: np.ndarray) -> dict[bytes, str]:
        """Full shard ids of 12-byte prefixes, from the packing's shard table."""
        keys = np.unique(np.asarray(prefixes, dtype="S12"))
        raw_keys = np.ascontiguousarray(keys).tobytes()
        padded = np.frombuffer(b"".join(raw_keys[12 * i : 12 * i + 12] + b"\x00" * 4 for i in range(len(keys))), dtype="S16")
        found, ents = shards_reader(self.store, packing).lookup(padded)
        if not found.all():
            raise CorruptObjectError(f"packing {packing.id} indexes a shard its shard table lacks", hint="run `dataversion verify`")
        raw = np.ascontiguousarray(ents["shard"]).tobytes()
        return {raw_keys[12 * i : 12 * i + 12]: raw[16 * i : 16 * i + 16].hex() for i in range(len(keys))}

    def locate(self, commit_id: str, ids: np.ndarray | None = None, *, ranks: tuple[int, int] | None = None,
               packing: Packing | None = None, with_erased: bool = False) -> list[RowGroup]:
        """Where records of a commit lie, grouped by shard, checked against the content tree.

        `ids` (held by the commit): those records; `ranks` (start, stop): the records of those
        places in id order; neither: every record. CorruptObjectError when the packing's index
        does not hold exactly the content tree's ids there. `packing`: one this process already
        read and checked for the commit (a loader resolves it once)."""
        if packing is None or packing.root != self.root_of(commit_id):
            packing = self.read_packing(commit_id)
        index = index_reader(self.store, packing)
        if ids is not None:
            ids = np.asarray(ids, dtype="S16")
            found, ents = index.lookup(ids)
            if not found.all():
                missing = ids[~found][:1].tobytes().hex()
                raise CorruptObjectError(f"packing {packing.id} of commit {commit_id} does not index record {missing}",
                                         hint="run `dataversion verify`")
        else:
            content = self.tree(commit_id)
            if ranks is None:
                want, ents = content.entries()["id"], index.entries()
            else:
                want, ents = content.entries_at(*ranks)["id"], index.entries_at(*ranks)
            if len(want) != len(ents) or (want != ents["id"]).any():
                raise CorruptObjectError(
                    f"packing {packing.id} does not index the records of commit {commit_id} (its index and the content tree differ)",
                    hint="run `dataversion verify`; restore the packing pointer or repack")
        if packing.erased and not with_erased:
            # erased records (payload removed, `dataversion erase`) are not served; readers
            # that keep positions (the loader, repack) ask for them
            ents = ents[~np.isin(ents["id"], _erased_ids(packing))]
        if len(ents) == 0:
            return []
        names = self._full_shard_ids(packing, ents["shard"])
        shard_col = ents["shard"]
        order = np.lexsort((ents["row"], shard_col))
        s_sorted = shard_col[order]
        cuts = np.flatnonzero(s_sorted[1:] != s_sorted[:-1]) + 1
        groups = []
        for part in np.split(order, cuts):
            prefix = np.ascontiguousarray(shard_col[part[:1]]).tobytes()
            groups.append(RowGroup(names[prefix], ents["row"][part].astype(np.int64), ents["id"][part], prefix))
        return groups

    def check_rows(self, commit_id: str, group: RowGroup, table_ids: np.ndarray) -> None:
        """The ids of the rows read from a shard must be the ids the tree holds there:
        CorruptObjectError naming the shard and the commit otherwise."""
        if len(table_ids) != len(group.ids) or (np.asarray(table_ids, dtype="S16") != group.ids).any():
            raise CorruptObjectError(
                f"shard {group.shard} does not hold the records the packing of commit {commit_id} places there",
                hint="run `dataversion verify`")

    def read_rows(self, commit_id: str, columns: list[str], groups: list[RowGroup] | None = None) -> Iterator[pa.Table]:
        """The records of a commit (or of `groups`), one table per shard, checked row by row
        against the content tree. `record_id` is always the first column."""
        cols = ["record_id", *[c for c in columns if c != "record_id"]]
        for group in self.locate(commit_id) if groups is None else groups:
            table = self.read_shard_columns(group.shard, cols).take(indices(group.rows))
            self.check_rows(commit_id, group, ids_as_numpy(table.column("record_id")))
            yield table

    def read_some_rows(self, commit_id: str, group: RowGroup, columns: list[str],
                       digests: np.ndarray | None = None) -> pa.Table:
        """Some columns of a few rows of a shard, reading only the Parquet row groups that
        hold them (ranged reads): what a delete needs for its modality counts and diff for
        its descriptions, at a cost that follows the change. The ids of the rows are checked
        against the content tree. With `digests` (the tree's entry digests of the group's
        rows, in row order) every row is checked whole: its metadata and payload are read
        too and hashed (`entry_digests`), so what is printed is what the commit names;
        without, the other columns are not hashed (counts, never payloads)."""
        import pyarrow.parquet as pq

        cols = ["record_id", *[c for c in columns if c != "record_id"]]
        wanted = cols
        if digests is not None:
            wanted = [*cols, *[c for c in (*ENTRY_COLUMNS, "text", "data") if c not in cols]]
        key = shard_key(group.shard)
        try:
            pf = pq.ParquetFile(self.store.open_input(key), pre_buffer=False)
            table = rows_of_row_groups(pf, group.rows, wanted)
        except (FileNotFoundError, NotFoundError):
            raise NotFoundError(f"shard {group.shard} is missing from {self.url}", hint="run `dataversion verify`") from None
        except (pa.ArrowInvalid, OSError, IndexError, KeyError) as e:
            raise CorruptObjectError(f"shard {group.shard} is not a readable Parquet file: {e}", hint="run `dataversion verify`") from e
        self.check_rows(commit_id, group, ids_as_numpy(table.column("record_id")))
        if digests is not None:
            if (entry_digests(table) != np.asarray(digests, dtype="S16")).any():
                raise CorruptObjectError(
                    f"shard {group.shard} does not hold the records commit {commit_id} names: "
                    "their metadata or payload was changed", hint="run `dataversion verify`")
            table = table.select(cols)
        return table

    # ------------------------------------------------------------------ shards
    def read_shard_bytes(self, shard: ShardRef | ShardInfo | str) -> bytes:
        """The bytes of a shard, checked against its name (CorruptObjectError if they differ)."""
        shard_id = shard if isinstance(shard, str) else shard.id
        try:
            data = self.store.get(shard_key(shard_id))
        except NotFoundError:
            raise NotFoundError(f"shard {shard_id} is missing from {self.url}", hint="run `dataversion verify`") from None
        actual = object_id(data)
        if actual != shard_id:
            raise CorruptObjectError(f"shard {shard_id} is corrupt: its bytes hash to {actual}", hint="run `dataversion verify`")
        return data

    def read_shard(self, shard: ShardRef | ShardInfo | str, columns: list[str] | None = None) -> pa.Table:
        """Every row of a shard, its bytes hashed against its name before anything is decoded."""
        shard_id = shard if isinstance(shard, str) else shard.id
        return decode_shard(self.read_shard_bytes(shard_id), shard_id, columns)

    def read_shard_columns(self, shard: ShardRef | ShardInfo | str, columns: list[str]) -> pa.Table:
        """Some columns of every row of a shard, its bytes checked against its name first.

        The whole object is read (a local file is memory-mapped): a column-only ranged read
        could not be checked, and callers check the ids of the rows they use against the
        content tree (`check_rows`)."""
        return self.read_shard(shard, columns)

    # ------------------------------------------------------------------ writing
    def write_commit(self, commit: Commit) -> str:
        """Store a commit (once); its id."""
        commit_id = commit.id
        self._put_or_freshen(commit_key(commit_id), commit.to_stored_bytes())
        self._commits.put(commit_id, commit)
        return commit_id

    def write_packing(self, packing: Packing) -> str:
        data = packing.to_bytes()
        packing_id = packing.id
        self._put_or_freshen(packing_key(packing_id), data)
        self._packings.put(packing_id, packing)
        return packing_id

    def staged_commit(self, commit: Commit, parent: str | None, packing: Packing | None) -> tuple[str, list[tuple[str, bytes]]]:
        """A new commit's immutable objects (its packing, the commit, its history chunk) as
        (key, bytes) for the caller to store in one batch with the commit's tree nodes; the
        caller stores them before any ref names the commit. Returns (commit id, objects)."""
        commit_id = commit.id
        out = []
        if packing is not None:
            out.append((packing_key(packing.id), packing.to_bytes()))
            self._packings.put(packing.id, packing)
        out.append((commit_key(commit_id), commit.to_stored_bytes()))
        self._commits.put(commit_id, commit)
        out.append((history.history_key(commit_id), self._history_chunk(commit_id, commit, parent).to_bytes()))
        return commit_id, out

    def write_history(self, commit_id: str, commit: Commit, parent: str | None) -> None:
        """Store the history chunk that lets `log` read many commits per request."""
        history.write_chunk(self.store, commit_id, self._history_chunk(commit_id, commit, parent))

    def _history_chunk(self, commit_id: str, commit: Commit, parent: str | None) -> history.Chunk:
        """The history chunk of a new commit (cached for its children's)."""
        parent_chunk = (self._chunks.get(parent) or history.read_chunk(self.store, parent)) if parent else None
        chunk = history.build_chunk(commit.summary(commit_id), parent_chunk, parent)
        self._chunks.put(commit_id, chunk)
        return chunk

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

    def attachment_ids(self, commit_id: str) -> dict[str, str]:
        """The blob id of each attachment of a commit as readers use them: an erasure's
        rewrites (`attachment-overrides/<commit>.json`, beside the commit: the commit id
        still names the originals) in place of the blobs it replaced."""
        attachments = self.read_commit(commit_id).attachments
        if not attachments:
            return {}
        try:
            overrides = json.loads(self.store.get(attachment_overrides_key(commit_id)))
        except NotFoundError:
            return dict(attachments)
        except ValueError as e:
            raise CorruptObjectError(f"{attachment_overrides_key(commit_id)} cannot be parsed: {e}") from e
        return {**attachments, **{k: v for k, v in overrides.items() if k in attachments}}

    def read_attachment(self, commit_id: str, name: str) -> bytes | None:
        blob_id = self.attachment_ids(commit_id).get(name)
        return self.read_blob(blob_id) if blob_id else None

    def write_shards(self, table: pa.Table, target_bytes: int = TARGET_SHARD_BYTES) -> list[ShardRef]:
        """Write a record table as shards (sorted, content-addressed) without committing.

        For distributed writers: each worker writes the shards of its id range, the driver
        passes the refs to `commit(prewritten_shards=...)`.
        """
        return self.write_shards_counted(conform(table), target_bytes)[0]

    def write_shards_counted(self, table: pa.Table, target_bytes: int = TARGET_SHARD_BYTES) -> tuple[list[ShardRef], int, list[np.ndarray]]:
        """`write_shards` of a conformed table: (refs, bytes newly stored, the table's row
        numbers that each shard holds, in shard row order)."""
        # Worker threads gather, encode and store each shard (Arrow, Parquet and file I/O
        # release the GIL).
        from concurrent.futures import ThreadPoolExecutor

        def encode_and_store(rows: np.ndarray) -> tuple[ShardRef, int]:
            part = table.take(indices(rows))
            data = parquet_bytes(part)
            written = self._put_or_freshen(shard_key(object_id(data)), bytes(data))
            return describe_shard(part, data, digest=None), len(data) if written else 0

        order, cuts = plan_shard_rows(table, target_bytes)
        parts = [order[a:b] for a, b in cuts]
        if len(parts) <= 1:
            results = [encode_and_store(p) for p in parts]
        else:
            with ThreadPoolExecutor(max_workers=2) as pool:
                results = list(pool.map(encode_and_store, parts))
        return [r for r, _ in results], sum(n for _, n in results), parts


def shard_table_keys(shard_ids: list[str]) -> np.ndarray:
    return np.array([shard_table_key(s) for s in shard_ids], dtype="S16")
