"""The one place `dataversion.interop` (and `dataversion.report`) learn how a commit is packed.

Everything else in the package asks a `SnapshotView` for its parts (one Parquet file per
packed unit of the commit), their verified bytes, the metadata columns of its live records,
and the files `checkout` would write. When the packing changes (content tree + packing
object), this module is what changes: it reads through the repository's verified reader
path only (`Repo.locate` over the checked packing, the read tier without a cache
`StoreRead`, `read_rows`, `check_rows`), never the store directly, so a shard whose bytes
differ from their name, or whose rows are not the records the commit's content tree holds
there, raises CorruptObjectError before anything is served.

What is served through fsspec is decoded on the calling thread (`use_threads=False`):
pyarrow.dataset opens its files from Arrow's CPU pool, and a Parquet read that waits on that
same pool from inside an open deadlocks once a commit has more shards than the pool has
threads (2 on a 2-core machine).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..cache.base import StoreRead
from ..errors import BadInputError, CorruptObjectError, NotFoundError
from ..objectdb import RowGroup
from ..porcelain.checkout import _EXT, suffixed
from ..records import ids_as_numpy, ids_to_hex
from ..scan import JSONL_TEXT_FIELD, split_line_source
from ..shards import parquet_bytes

if TYPE_CHECKING:
    from ..repo import Repo

# The columns a served Parquet file holds: the records' columns as the shards store them.
RECORD_COLUMNS = ("record_id", "modality", "source", "label", "meta", "text", "data")


@dataclass(frozen=True)
class Part:
    """One Parquet file of a snapshot: a stored shard served as it is (`zero_copy`: the
    commit holds every row of it, in order), or the rows the commit holds rewritten."""

    name: str
    group: RowGroup  # the shard and the rows of it the commit holds (checked ids)
    size: int  # the stored shard's size in bytes
    zero_copy: bool

    @property
    def rows(self) -> int:
        return len(self.group.rows)

    @property
    def known_size(self) -> int | None:
        """The file's size when known without reading it (a zero-copy part: the shard's)."""
        return self.size if self.zero_copy else None


@dataclass(frozen=True)
class FileEntry:
    """One file `checkout` writes: a record's payload, or a JSONL file's lines."""

    path: str  # relative, '/'-separated
    rows: tuple[tuple[int, int], ...]  # (part index, row within the part's live rows)
    jsonl: bool


class _BytesLRU:
    """Verified buffers by key, bounded by total size; thread-safe (pyarrow reads in threads)."""

    def __init__(self, budget: int):
        self.budget = budget
        self.held = 0
        self.items: OrderedDict[str, memoryview] = OrderedDict()
        self.lock = threading.Lock()
        self.key_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)

    def get_or_make(self, key: str, make) -> memoryview:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
            key_lock = self.key_locks[key]
        with key_lock:  # one thread verifies a shard; the others wait for its bytes
            with self.lock:
                if key in self.items:
                    return self.items[key]
            data = make()
            with self.lock:
                self.items[key] = data
                self.held += len(data)
                while self.held > self.budget and len(self.items) > 1:
                    _, old = self.items.popitem(last=False)
                    self.held -= len(old)
                self.key_locks.pop(key, None)
            return data


class _Layouts:
    """The parts of a commit's packing, checked once per process (`Repo.locate`: the
    packing's index against the content tree), like the tree nodes they come from
    (`tree.NODE_CACHE`). Keyed by store, commit and packing id: all three name immutable
    objects, and a repack or erasure re-points the commit to another packing id, so a
    cached layout never outlives what it describes. Bounded by the records held (each
    costs 24 bytes: id and row). Shard bytes are not cached here: every view hashes
    every shard it serves."""

    def __init__(self, max_records: int):
        self.max_records = max_records
        self._d: OrderedDict[tuple[str, str, str], list[Part]] = OrderedDict()
        self._lock = threading.Lock()

    def parts(self, repo: Repo, commit_id: str, packing) -> list[Part]:
        key = (repo.store.url, commit_id, packing.id)
        with self._lock:
            parts = self._d.get(key)
            if parts is not None:
                self._d.move_to_end(key)
                return parts
        parts = _make_parts(repo, commit_id, packing)
        with self._lock:
            self._d[key] = parts
            while len(self._d) > 1 and sum(p.rows for ps in self._d.values() for p in ps) > self.max_records:
                self._d.popitem(last=False)
        return parts

    def clear(self) -> None:
        with self._lock:
            self._d.clear()


def _make_parts(repo: Repo, commit_id: str, packing) -> list[Part]:
    infos = {s.id: s for s in repo.shard_table(packing)}
    groups = sorted(repo.locate(commit_id, packing=packing), key=lambda g: g.ids[0] if len(g.ids) else b"")
    parts = []
    for i, g in enumerate(groups):
        info = infos[g.shard]
        whole = len(g.rows) == info.rows and bool((g.rows == np.arange(info.rows)).all())
        parts.append(Part(f"part-{i:05d}-{g.shard[:16]}.parquet", g, info.size, zero_copy=whole))
    return parts


LAYOUTS = _Layouts(max_records=4_000_000)


def check_relative(path: str) -> str:
    """`path` if it is a safe relative path (as `checkout` requires), else BadInputError."""
    parts = path.replace("\\", "/").split("/")
    if not path or path.startswith(("/", "\\")) or any(p in ("..", "", ".") for p in parts):
        raise BadInputError(f"record source {path!r} is not a relative path inside the snapshot")
    return "/".join(parts)


class SnapshotView:
    """The records of one commit, read through the verified reader path.

    `cache_bytes` bounds the verified shard bytes (and rewritten parts) kept in memory.
    """

    def __init__(self, repo: Repo, commit_id: str, *, cache_bytes: int = 256 * 2**20):
        self.repo = repo
        self.commit_id = commit_id
        self.commit = repo.read_commit(commit_id)
        packing = repo.read_packing(commit_id)  # checked against the commit's content root
        self.parts: list[Part] = LAYOUTS.parts(repo, commit_id, packing)
        self.by_name = {p.name: i for i, p in enumerate(self.parts)}
        self._bytes = _BytesLRU(cache_bytes)
        self._tables: OrderedDict[int, pa.Table] = OrderedDict()
        self._tables_lock = threading.Lock()
        self._files: dict[str, FileEntry] | None = None
        self._files_lock = threading.Lock()

    # ------------------------------------------------------------------ summary
    @property
    def record_count(self) -> int:
        return self.commit.records.count

    def by_modality(self) -> dict[str, int]:
        return dict(self.commit.records.by_modality)

    # ------------------------------------------------------------------ Parquet parts
    def part_bytes(self, index: int) -> memoryview:
        """The Parquet bytes of a part (read-only): the shard's own bytes, hashed against
        its name, or (deleted rows) its live rows rewritten from the verified shard. Cached
        (`cache_bytes`). A file:// shard is memory-mapped in place, as the loader's read
        tier does (objects are written once, by rename, and never modified in place), and
        hashed each time it is mapped: no copy of it is made to serve it."""
        part = self.parts[index]
        return self._bytes.get_or_make(part.name, lambda: self._make_part(part))

    def _shard_buffer(self, shard_id: str) -> pa.Buffer:
        # a fresh tier each time: its "verified once per process" must not carry over,
        # every mapping of a shard is hashed again
        return StoreRead().read(self.repo.store, shard_id)

    def _served_rows(self, group: RowGroup, columns: list[str], buf: pa.Buffer | None = None) -> pa.Table:
        """The rows of `group` with `columns` ('record_id' first), from the verified shard,
        decoded on this thread (see the module docstring), ids checked against the tree."""
        buf = self._shard_buffer(group.shard) if buf is None else buf
        try:
            pf = pq.ParquetFile(pa.BufferReader(buf))
            table = pf.read(columns=["record_id", *[c for c in columns if c != "record_id"]], use_threads=False)
        except (pa.ArrowInvalid, OSError) as e:
            raise CorruptObjectError(f"shard {group.shard} is not a readable Parquet file: {e}") from e
        if len(group.rows) != table.num_rows or not bool((group.rows == np.arange(table.num_rows)).all()):
            table = table.take(pa.array(group.rows))
        self.repo.check_rows(self.commit_id, group, ids_as_numpy(table.column("record_id")))
        return table

    def _make_part(self, part: Part) -> memoryview:
        if part.zero_copy:
            buf = self._shard_buffer(part.group.shard)  # hashed against its name
            rows = pq.ParquetFile(pa.BufferReader(buf)).metadata.num_rows
            if rows != part.rows:
                raise CorruptObjectError(f"shard {part.group.shard} has {rows} rows, the packing of {self.commit_id} says {part.rows}")
            self._served_rows(part.group, ["record_id"], buf)  # the records the tree holds there
            return memoryview(buf)
        table = self._served_rows(part.group, list(RECORD_COLUMNS)).select(list(RECORD_COLUMNS))
        return memoryview(parquet_bytes(table)).toreadonly()

    def part_table(self, index: int, columns: list[str] | None = None) -> pa.Table:
        """The rows of a part the commit holds (verified), some columns (all by default)."""
        cols = list(columns) if columns else list(RECORD_COLUMNS)
        table = next(self.repo.read_rows(self.commit_id, cols, [self.parts[index].group]))
        return table.select(cols)

    def metadata_tables(self, columns: list[str]):
        """Each part's live rows with `columns` (payload columns only when asked for)."""
        for i in range(len(self.parts)):
            yield self.part_table(i, columns)

    # ------------------------------------------------------------------ files (checkout)
    def files(self) -> dict[str, FileEntry]:
        """Every file `checkout` writes, by relative path (same names: records sharing a
        source path are `name~<id8>.ext`; JSONL lines regrouped into their file)."""
        with self._files_lock:
            if self._files is None:
                self._files = self._plan_files()
            return self._files

    def _plan_files(self) -> dict[str, FileEntry]:
        by_path: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
        jsonl: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        for i in range(len(self.parts)):
            t = self.part_table(i, ["record_id", "modality", "source"])
            hexes = ids_to_hex(ids_as_numpy(t.column("record_id")))
            for row, (rid, mod, src) in enumerate(zip(hexes, t.column("modality").to_pylist(), t.column("source").to_pylist())):
                line = split_line_source(src) if src else None
                if line:
                    jsonl[check_relative(line[0])].append((line[1], i, row))
                else:
                    by_path[check_relative(src) if src else f"{mod}/{rid}{_EXT.get(mod, '.bin')}"].append((rid, i, row))
        out: dict[str, FileEntry] = {}
        for rel, entries in jsonl.items():
            entries.sort()
            out[rel] = FileEntry(rel, tuple((i, row) for _, i, row in entries), jsonl=True)
        for rel, entries in by_path.items():
            if len(entries) == 1 and rel not in jsonl:
                out[rel] = FileEntry(rel, ((entries[0][1], entries[0][2]),), jsonl=False)
                continue
            for rid, i, row in sorted(entries):
                new = suffixed(rel, rid).replace("\\", "/")
                if new in out:
                    raise BadInputError(f"records of {rel!r} and {new!r} map to the same file {new!r}")
                out[new] = FileEntry(new, ((i, row),), jsonl=False)
        return out

    def _payload_table(self, index: int) -> pa.Table:
        with self._tables_lock:
            t = self._tables.get(index)
            if t is not None:
                self._tables.move_to_end(index)
                return t
        cols = ["source", "meta", "text", "data"]
        t = self._served_rows(self.parts[index].group, cols).select(cols)  # served through fsspec
        with self._tables_lock:
            self._tables[index] = t
            while len(self._tables) > 2:
                self._tables.popitem(last=False)
        return t

    def file_bytes(self, path: str) -> bytes:
        """The bytes `checkout` writes at `path`. NotFoundError if there is no such file."""
        entry = self.files().get(path)
        if entry is None:
            raise NotFoundError(f"no file {path!r} in commit {self.commit_id}")
        if not entry.jsonl:
            i, row = entry.rows[0]
            t = self._payload_table(i)
            text = t.column("text")[row].as_py()
            return text.encode("utf-8") if text is not None else (t.column("data")[row].as_py() or b"")
        lines = []
        for i, row in entry.rows:
            t = self._payload_table(i)
            meta = t.column("meta")[row].as_py()
            obj = json.loads(meta) if meta else {}
            obj[JSONL_TEXT_FIELD] = t.column("text")[row].as_py()
            lines.append(json.dumps(obj, ensure_ascii=False, sort_keys=True) + "\n")
        return "".join(lines).encode("utf-8")

    # ------------------------------------------------------------------ lookups
    def find_records(self, record_ids: list[str], columns: list[str]) -> dict[str, dict]:
        """The live records among `record_ids` (hex), with `columns`, by id; ids the
        snapshot does not hold are absent.

        Looks the ids up in the content tree, then reads only the shards holding them
        (each hashed against its name, the rows checked against the tree)."""
        wanted = sorted({h for h in record_ids if len(h) == 32})
        if not wanted:
            return {}
        ids = np.array([bytes.fromhex(h) for h in wanted], dtype="S16")
        held = ids[self.repo.contains(self.commit_id, ids)]
        if not len(held):
            return {}
        cols = list(dict.fromkeys(["record_id", *columns]))
        found: dict[str, dict] = {}
        for table in self.repo.read_rows(self.commit_id, cols, self.repo.locate(self.commit_id, held)):
            hexes = ids_to_hex(ids_as_numpy(table.column("record_id")))
            rest = {c: table.column(c).to_pylist() for c in cols if c != "record_id"}
            for r, h in enumerate(hexes):
                found[h] = {"record_id": h, **{c: v[r] for c, v in rest.items()}}
        return found
