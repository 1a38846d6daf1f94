"""Band parts read by key: the branch's rows of a few band keys fetched with range reads,
every byte served checked against a hash that lies in a content-addressed object.

A band part (band, key, record_id rows sorted by key) is an Arrow IPC file of one record
batch of fixed-width columns, so row i's key lies at `key_offset + 8 i`, its band at
`band_offset + i` and its id at `id_offset + 16 i`. Beside it, a *fence* (an Arrow IPC file
of its own, stored as a blob named by its hash like the part) holds for every page of
PAGE_ROWS rows the top 32 bits of the page's first key and two 32-bit checksums (the low
half of xxh3-64, as Parquet's page CRC32): of its key bytes, and of its band then id bytes;
its schema metadata names the part's blob id, row count and offsets.

A reader given the new keys of a key range reads the fence whole (checked by its id),
picks the pages whose key span can hold a new key, reads their key bytes (one range per
run of adjacent pages) and checks each page's key hash; then it reads band and id bytes
only of the pages where a key matched, checked by their hash. A mismatch, a short read or
a fence that names another part is CorruptObjectError: nothing unchecked is served.

Costs: the fence is 12 bytes per page (~3% of the part at PAGE_ROWS = 16); a page costs
8 bytes a row to rule out and 25 bytes a row to serve. New keys are uniform hashes, so new
keys numbering a fraction f of the part's rows touch ~1 - exp(-f * PAGE_ROWS) of its pages
(at f = 1%: ~15%, so ~3% + 15% x 8/25 ~ 8% of the part is read; at 0.1%: ~3.5%). Smaller
reads at small f need the fence itself paged (a second level); with random keys no page
layout reads much under f x 25 bytes a row plus its fence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import xxhash

from dataversion.errors import CorruptObjectError
from dataversion.records import RECORD_ID

PAGE_ROWS = 16
FENCE_META = b"dataversion.band_fence"
FENCE_VERSION = 1  # a reader refuses other versions (CorruptObjectError), never guesses
ID_WIDTH = 16
BAND_SCHEMA = pa.schema([("band", pa.uint8()), ("key", pa.uint64()), ("record_id", RECORD_ID)])
_FENCE_SCHEMA = pa.schema(
    [("first_top", pa.uint32()), ("key_hash", pa.uint32()), ("rest_hash", pa.uint32())]
)
_LOW32 = 0xFFFFFFFF


def _key_hash(keys: bytes | memoryview) -> int:
    return xxhash.xxh3_64_intdigest(keys) & _LOW32


def _ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _rest_hash(band: bytes | memoryview, ids: bytes | memoryview) -> int:
    h = xxhash.xxh3_64()
    h.update(band)
    h.update(ids)
    return h.intdigest() & _LOW32


@dataclass(frozen=True)
class Fence:
    """The page index of one band part (see the module docstring)."""

    blob: str
    rows: int
    page_rows: int
    key_offset: int
    band_offset: int
    id_offset: int
    last_key: int
    first: np.ndarray  # uint32, one per page: the top 32 bits of its first key
    key_hash: np.ndarray
    rest_hash: np.ndarray

    @classmethod
    def from_bytes(cls, data: bytes) -> Fence:
        """Parse a fence (its bytes already checked against its id); CorruptObjectError if
        it is not one."""
        try:
            t = pa.ipc.open_file(pa.BufferReader(data)).read_all()
            meta = json.loads((t.schema.metadata or {})[FENCE_META])
            if meta["version"] != FENCE_VERSION or t.schema.remove_metadata() != _FENCE_SCHEMA:
                raise ValueError(f"fence version {meta['version']}")
            cols = [t.column(c).to_numpy() for c in _FENCE_SCHEMA.names]
            if meta["page_rows"] <= 0 or len(cols[0]) != -(-meta["rows"] // meta["page_rows"]):
                raise ValueError("its pages do not cover its rows")
        except (KeyError, ValueError, pa.ArrowException) as e:
            raise CorruptObjectError(f"a band part's fence cannot be parsed: {e}") from e
        return cls(
            meta["blob"], meta["rows"], meta["page_rows"], meta["key_offset"],
            meta["band_offset"], meta["id_offset"], meta["last_key"], *cols,
        )  # fmt: skip


def fence_bytes(blob_id: str, data: bytes, page_rows: int = PAGE_ROWS) -> bytes | None:
    """The fence of band part `data` (named `blob_id`); None when the part cannot be read
    by range (not one batch of the band schema: an older part, read whole)."""
    buf = pa.py_buffer(data)
    reader = pa.ipc.open_file(pa.BufferReader(buf))
    if reader.num_record_batches != 1 or reader.schema.remove_metadata() != BAND_SCHEMA:
        return None
    batch = reader.get_batch(0)
    n = batch.num_rows
    if n == 0 or any(c.null_count for c in batch.columns):
        return None
    band, key, ids = (c.buffers()[1] for c in batch.columns)
    offsets = [b.address - buf.address for b in (band, key, ids)]
    if any(o < 0 or o > len(data) for o in offsets) or (
        batch.column(1).offset or batch.column(0).offset or batch.column(2).offset
    ):
        return None
    mv = memoryview(data)
    bo, ko, io = offsets
    starts = range(0, n, page_rows)
    key_hash = [_key_hash(mv[ko + 8 * s : ko + 8 * min(n, s + page_rows)]) for s in starts]
    rest_hash = [
        _rest_hash(
            mv[bo + s : bo + min(n, s + page_rows)],
            mv[io + ID_WIDTH * s : io + ID_WIDTH * min(n, s + page_rows)],
        )
        for s in starts
    ]
    keys = batch.column(1).to_numpy()
    meta = {
        "version": FENCE_VERSION, "blob": blob_id, "rows": n, "page_rows": page_rows,
        "key_offset": ko, "band_offset": bo, "id_offset": io, "last_key": int(keys[-1]),
    }  # fmt: skip
    t = pa.Table.from_arrays(
        [
            pa.array((keys[::page_rows] >> np.uint64(32)).astype(np.uint32)),
            pa.array(np.array(key_hash, np.uint32)),
            pa.array(np.array(rest_hash, np.uint32)),
        ],
        schema=_FENCE_SCHEMA.with_metadata({FENCE_META: json.dumps(meta, sort_keys=True)}),
    )
    return _ipc_bytes(t)


def _pages_of(fence: Fence, keys: np.ndarray) -> np.ndarray:
    """The pages (ascending, unique) whose key span can hold one of `keys` (sorted), by
    the top 32 bits: a key whose top bits equal a page's first key's may also lie in the
    page before it."""
    top = (keys >> np.uint64(32)).astype(np.uint32)
    lo = np.maximum(np.searchsorted(fence.first, top, "left") - 1, 0)
    hi = np.searchsorted(fence.first, top, "right") - 1
    span = hi - lo + 1
    if (span == 1).all():
        return np.unique(lo)
    start = np.repeat(np.cumsum(span) - span, span)
    return np.unique(np.repeat(lo, span) + (np.arange(span.sum()) - start))


def _runs(pages: np.ndarray) -> list[tuple[int, int]]:
    """[first, last] of each run of consecutive pages (`pages` ascending, unique)."""
    cut = np.flatnonzero(np.diff(pages) != 1)
    first = pages[np.concatenate([[0], cut + 1])]
    last = pages[np.concatenate([cut, [len(pages) - 1]])]
    return list(zip(first.tolist(), last.tolist()))


# On a remote store each run of pages is one request: past this many runs per read of a
# part, the smallest gaps between runs are read through (bytes of pages nobody asked for,
# checked like the rest) so a part costs at most this many requests per phase. A local
# store reads each run with one pread: no bound.
MAX_RUNS_REMOTE = 16


def _bounded(pages: np.ndarray, max_runs: int | None) -> np.ndarray:
    """`pages` (ascending, unique) with the gaps between its runs filled until at most
    `max_runs` runs remain: the largest gaps stay unread."""
    if max_runs is None or len(pages) < 2:
        return pages
    gaps = np.diff(pages) - 1
    cut = np.flatnonzero(gaps > 0)
    if len(cut) < max_runs:
        return pages
    keep = cut[np.argsort(gaps[cut], kind="stable")[len(cut) - (max_runs - 1):]] if max_runs > 1 else cut[:0]
    fill = np.setdiff1d(cut, keep)
    extra = [np.arange(pages[i] + 1, pages[i + 1]) for i in fill.tolist()]
    return np.union1d(pages, np.concatenate(extra)) if extra else pages


def _rows_of_pages(pages: np.ndarray, page_rows: int, n: int) -> np.ndarray:
    """The row numbers (ascending) of `pages` (ascending, unique) of a part of `n` rows."""
    rows = (pages[:, None] * page_rows + np.arange(page_rows)).ravel()
    return rows[rows < n]


class _Reader:
    def __init__(self, store, key: str, fence: Fence):
        self.store, self.key, self.fence = store, key, fence

    def rows(self, p0: int, p1: int) -> tuple[int, int]:
        c, n = self.fence.page_rows, self.fence.rows
        return p0 * c, min(n, (p1 + 1) * c)

    def read(self, offset: int, length: int) -> bytes:
        data = self.store.read_range(self.key, offset, length)
        if len(data) != length:
            raise CorruptObjectError(f"{self.key}: short read ({len(data)} of {length} bytes)")
        return data

    def check(self, p: int, got: int, want: np.ndarray) -> None:
        if got != int(want[p]):
            raise CorruptObjectError(f"{self.key}: page {p} does not match its fence")


def rows_of_keys(store, store_key: str, fence: Fence, keys: np.ndarray) -> pa.Table:
    """The part's rows (band, key, record_id; in part order) whose key is one of `keys`
    (uint64, sorted, unique), read by range from `store_key` and checked page by page.
    CorruptObjectError on any mismatch."""
    f = fence
    top = keys >> np.uint64(32)
    q = keys[(top >= f.first[0]) & (keys <= f.last_key)] if f.rows else keys[:0]
    if len(q) == 0:
        return BAND_SCHEMA.empty_table()
    r = _Reader(store, store_key, f)
    max_runs = None if store.local_path(store_key) is not None else MAX_RUNS_REMOTE
    pages = _bounded(_pages_of(f, q), max_runs)
    chunks = []
    for p0, p1 in _runs(pages):
        a, b = r.rows(p0, p1)
        data = r.read(f.key_offset + 8 * a, 8 * (b - a))
        mv = memoryview(data)
        for p in range(p0, p1 + 1):
            s, e = r.rows(p, p)
            r.check(p, _key_hash(mv[8 * (s - a) : 8 * (e - a)]), f.key_hash)
        chunks.append(data)
    got = np.frombuffer(b"".join(chunks), np.uint64)
    at = np.minimum(np.searchsorted(q, got), len(q) - 1)
    hit = q[at] == got
    if not hit.any():
        return BAND_SCHEMA.empty_table()
    rows = _rows_of_pages(pages, f.page_rows, f.rows)[hit]
    key_col = got[hit]
    hit_pages = _bounded(np.unique(rows // f.page_rows), max_runs)
    bands, ids = [], []
    for p0, p1 in _runs(hit_pages):
        a, b = r.rows(p0, p1)
        band = r.read(f.band_offset + a, b - a)
        idb = r.read(f.id_offset + ID_WIDTH * a, ID_WIDTH * (b - a))
        bv, iv = memoryview(band), memoryview(idb)
        for p in range(p0, p1 + 1):
            s, e = r.rows(p, p)
            got_hash = _rest_hash(bv[s - a : e - a], iv[ID_WIDTH * (s - a) : ID_WIDTH * (e - a)])
            r.check(p, got_hash, f.rest_hash)
        bands.append(band)
        ids.append(idb)
    # where each hit row lies in the concatenated pages read
    at = np.searchsorted(_rows_of_pages(hit_pages, f.page_rows, f.rows), rows)
    band_col = np.frombuffer(b"".join(bands), np.uint8)[at]
    id_col = np.frombuffer(b"".join(ids), np.uint8).reshape(-1, ID_WIDTH)[at]
    return pa.Table.from_arrays(
        [
            pa.array(band_col),
            pa.array(key_col),
            pa.FixedSizeBinaryArray.from_buffers(
                RECORD_ID, len(id_col), [None, pa.py_buffer(np.ascontiguousarray(id_col).tobytes())]
            ),
        ],
        schema=BAND_SCHEMA,
    )
