"""The one place `dataversion.interop` (and `dataversion.report`) learn how a commit is packed.

Everything else in the package asks a `SnapshotView` for its parts (one Parquet file per
packed unit of the commit), their verified bytes, the metadata columns of its live records,
and the files `checkout` would write. When the packing changes (content tree + packing
object), this module is what changes: it reads through the repository's verified reader
path only (`Repo.locate` over the checked packing, `read_shard_bytes`, `read_rows`), never
the store directly, so a shard whose bytes differ from their name, or whose rows are not the
records the commit's content tree holds there, raises CorruptObjectError before anything is
served.
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

from ..errors import BadInputError, CorruptObjectError, NotFoundError
from ..objectdb import RowGroup
from ..porcelain.checkout import _EXT, suffixed
from ..records import ids_as_numpy, ids_to_hex
from ..scan import JSONL_TEXT_FIELD, split_line_source
from ..shards import decode_shard, parquet_bytes

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
    """Verified bytes by key, bounded by total size; thread-safe (pyarrow reads in threads)."""

    def __init__(self, budget: int):
        self.budget = budget
        self.held = 0
        self.items: OrderedDict[str, bytes] = OrderedDict()
        self.lock = threading.Lock()
        self.key_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)

    def get_or_make(self, key: str, make) -> bytes:
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
        infos = {s.id: s for s in repo.shard_table(packing)}
        groups = sorted(repo.locate(commit_id, packing=packing), key=lambda g: g.ids[0] if len(g.ids) else b"")
        self.parts: list[Part] = []
        for i, g in enumerate(groups):
            info = infos[g.shard]
            whole = len(g.rows) == info.rows and bool((g.rows == np.arange(info.rows)).all())
            self.parts.append(Part(f"part-{i:05d}-{g.shard[:16]}.parquet", g, info.size, zero_copy=whole))
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
    def part_bytes(self, index: int) -> bytes:
        """The Parquet bytes of a part: the shard's own bytes, hashed against its name, or
        (deleted rows) its live rows rewritten from the verified shard. Cached."""
        part = self.parts[index]
        return self._bytes.get_or_make(part.name, lambda: self._make_part(part))

    def _make_part(self, part: Part) -> bytes:
        if part.zero_copy:
            data = self.repo.read_shard_bytes(part.group.shard)  # hashed against its name
            rows = pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows
            if rows != part.rows:
                raise CorruptObjectError(f"shard {part.group.shard} has {rows} rows, the packing of {self.commit_id} says {part.rows}")
            ids = ids_as_numpy(decode_shard(data, part.group.shard, ["record_id"]).column("record_id"))
            self.repo.check_rows(self.commit_id, part.group, ids)  # the records the tree holds there
            return data
        return bytes(parquet_bytes(self.part_table(self.parts.index(part), list(RECORD_COLUMNS))))

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
        t = self.part_table(index, ["source", "meta", "text", "data"])
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
