"""Shards: immutable Parquet files of records sorted by record id, named by their bytes' hash.

`plan_shards` sorts a record table by id and cuts it into shards of about `target_bytes`
of payload; the cut depends only on the records, so the same records give the same shards.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from .errors import CorruptObjectError
from .hashing import DEFAULT_ID_HASH, DIGEST_MOD, digest_hex, object_id
from .objects import ShardRef
from .records import binary_record_ids, id_bytes, ids_as_numpy, text_record_ids

TARGET_SHARD_BYTES = 32 * 1024 * 1024
ROW_GROUP_ROWS = 4096


@dataclass(frozen=True)
class ShardEncoding:
    """How a shard's columns are laid out in Parquet. Readers need none of it (Parquet records
    each column chunk's codec), so it may change at any time; a shard's bytes, hence its name,
    depend on it. Chosen by measurement (benchmarks/bench_encoding.py, figures in docs/
    ARCHITECTURE.md): `text` is the payload of text records, `data` of images, audio and other
    files (mostly compressed already), `metadata` the id and metadata columns."""

    text_codec: str = "snappy"
    text_level: int | None = None
    data_codec: str = "snappy"
    data_level: int | None = None
    metadata_codec: str = "snappy"
    metadata_level: int | None = None
    id_codec: str = "snappy"  # record ids are hashes: no codec shrinks them
    row_group_rows: int = ROW_GROUP_ROWS
    data_page_bytes: int = 1024 * 1024
    dictionary: tuple[str, ...] = ("modality", "label")  # few distinct values; payloads are unique

    def write_options(self, columns: list[str]) -> dict:
        """Keyword arguments for `pq.write_table` of a table with `columns` (per-column codecs
        and levels)."""
        codecs, levels = {}, {}
        for name in columns:
            codec, level = (
                (self.text_codec, self.text_level) if name == "text"
                else (self.data_codec, self.data_level) if name == "data"
                else (self.id_codec, None) if name == "record_id"
                else (self.metadata_codec, self.metadata_level)
            )
            codecs[name] = codec
            if level is not None:
                levels[name] = level
        return {
            "compression": codecs,
            "compression_level": levels or None,
            "row_group_size": self.row_group_rows,
            "data_page_size": self.data_page_bytes,
            "use_dictionary": [c for c in self.dictionary if c in columns],
            "write_statistics": ["record_id"],
        }


BEFORE_ENCODING = ShardEncoding()  # format 2 as first built: snappy everywhere
# Measured (benchmarks/bench_encoding.py; docs/ARCHITECTURE.md "Shard encoding"): zstd level 2
# is the smallest of the fast levels on random-word texts and 0.65x snappy's bytes on real prose
# (level 3: 4% smaller on prose, 4% larger on random words, half the encode rate); images and
# audio are compressed already: no codec writes and reads them fastest at +0.1% bytes.
SHARD_ENCODING = ShardEncoding(
    text_codec="zstd", text_level=2,
    data_codec="none",
    metadata_codec="zstd", metadata_level=2,
    id_codec="none",
)


# The columns a shard entry's hash covers (record id + the metadata training sees).
ENTRY_COLUMNS = ("record_id", "modality", "source", "label", "meta")


def shard_key(shard_id: str) -> str:
    """Store key of a shard."""
    return f"shards/{shard_id[:2]}/{shard_id}.parquet"


def sort_order(ids: np.ndarray) -> np.ndarray:
    """Indices that sort an 'S16' id array in byte order.

    Sorting on the first 8 bytes as a big-endian integer is much faster than comparing
    16-byte strings; ids are hashes, so ties there are astronomically rare and fall back to
    a full byte-string sort.
    """
    hi = np.frombuffer(ids.tobytes(), dtype=">u8")[::2].astype(np.uint64)
    order = np.argsort(hi, kind="stable")
    hs = hi[order]
    if len(hs) > 1 and (hs[1:] == hs[:-1]).any():
        return np.argsort(ids, kind="stable")
    return order


def first_occurrences(ids: np.ndarray) -> np.ndarray:
    """Mask of the first occurrence of each id (later repeats are False)."""
    if len(ids) < 2:
        return np.ones(len(ids), dtype=bool)
    order = sort_order(ids)
    s = ids[order]
    repeat = np.zeros(len(ids), dtype=bool)
    repeat[order[1:]] = s[1:] == s[:-1]
    return ~repeat


def sort_by_id(table: pa.Table) -> pa.Table:
    """The table with rows sorted by record id (byte order)."""
    ids = ids_as_numpy(table.column("record_id"))
    if len(ids) < 2 or (ids[1:] >= ids[:-1]).all():
        return table
    return table.take(pa.array(sort_order(ids)))


def _offsets_and_bytes(column: pa.ChunkedArray | pa.Array) -> tuple[list[int], memoryview, list[bool]]:
    """One binary column as Python offsets, one memoryview over its bytes and validity, so a
    per-row loop slices values without building Python strings."""
    arr = column.cast(pa.large_binary())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, dtype=np.int64)[arr.offset : arr.offset + n + 1] if off_buf else np.zeros(n + 1, np.int64)
    data = memoryview(data_buf) if data_buf is not None else memoryview(b"")
    return offsets.tolist(), data, arr.is_valid().to_numpy(zero_copy_only=False).tolist()


def _payload_digests(table: pa.Table) -> Iterator[bytes]:
    """`payload_hashes`, one at a time."""
    to, tb, tv = _offsets_and_bytes(table.column("text"))
    do, db, dv = _offsets_and_bytes(table.column("data"))
    b2 = hashlib.blake2b
    for i in range(table.num_rows):
        if tv[i]:
            yield b"t" + b2(tb[to[i] : to[i + 1]], digest_size=16).digest()
        elif dv[i]:
            yield b"d" + b2(db[do[i] : do[i + 1]], digest_size=16).digest()
        else:
            yield b"-"


def payload_hashes(table: pa.Table) -> list[bytes]:
    """BLAKE2b-128 of each record's payload (text as UTF-8, or data), tagged `t`/`d`; b"-"
    where it has none."""
    return list(_payload_digests(table))


_NULL_FIELD = 0xFFFFFFFF  # the length prefix of a null metadata field (distinct from empty)


def _entry_prefixes(table: pa.Table) -> pa.Array:
    """Per record, the bytes an entry digest starts with: its id, then each metadata field
    length-prefixed (u32 little endian; null: 0xffffffff and no bytes), joined by Arrow."""
    n = table.num_rows
    parts: list[pa.Array] = [table.column("record_id").cast(pa.binary())]
    for name in ENTRY_COLUMNS[1:]:
        col = table.column(name).cast(pa.binary())
        lengths = pc.binary_length(col).to_numpy(zero_copy_only=False)
        valid = col.is_valid().to_numpy(zero_copy_only=False)
        prefix = np.where(valid, np.nan_to_num(lengths, nan=0), _NULL_FIELD).astype("<u4")
        parts.append(pa.FixedSizeBinaryArray.from_buffers(pa.binary(4), n, [None, pa.py_buffer(prefix.tobytes())])
                     .cast(pa.binary()))
        parts.append(col.fill_null(b""))
    joined = pc.binary_join_element_wise(*parts, b"")
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def entry_digests(table: pa.Table, payload: list[bytes] | None = None) -> np.ndarray:
    """The content-tree digest of each record ('S16'): BLAKE2b-128 of its id, the metadata
    training sees (modality, source, label, meta; each length-prefixed, null distinct from
    empty) and its payload's BLAKE2b-128 (`payload_hashes`). A cryptographic hash: a commit id
    binds every record's metadata and payload bytes, whatever the record id hash is.
    One Python loop over memoryview slices: no per-record strings are built."""
    n = table.num_rows
    if n == 0:
        return np.empty(0, dtype="S16")
    po, pb, _ = _offsets_and_bytes(_entry_prefixes(table))
    payloads = iter(payload) if payload is not None else _payload_digests(table)
    b2 = hashlib.blake2b
    out = []
    for i, ph in zip(range(n), payloads, strict=True):
        h = b2(pb[po[i] : po[i + 1]], digest_size=16)
        h.update(ph)
        out.append(h.digest())
    return np.frombuffer(b"".join(out), dtype="S16")


def entries_digest_of(table: pa.Table) -> int:
    """Sum of entry hashes of a record table (record id + metadata), mod 2**128.

    Vectorized twin of `hashing.entry_hash`: the same bytes (id, then each metadata field
    after a NUL separator, null as empty) are joined by Arrow and hashed in one pass.
    """
    return limbs_digest(entry_limbs(table))


def entry_limbs(table: pa.Table) -> np.ndarray:
    """Entry hashes of every row as an (n, 4) array of 32-bit limbs (most significant first).

    Per-shard digests are then exact vectorized sums over any subset of rows, in any order.
    """
    if table.num_rows == 0:
        return np.zeros((0, 4), dtype=np.uint64)
    parts = [table.column("record_id").cast(pa.binary())]
    parts += [table.column(c).cast(pa.binary()) for c in ENTRY_COLUMNS[1:]]
    joined = pc.binary_join_element_wise(*parts, b"\x00", null_handling="replace", null_replacement=b"")
    chunks = joined.chunks if isinstance(joined, pa.ChunkedArray) else [joined]
    h = xxhash.xxh3_128_digest
    out = []
    for arr in chunks:
        bufs = arr.buffers()
        offsets = np.frombuffer(bufs[1], dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1].tolist()
        data = memoryview(bufs[2])
        out.append(b"".join([h(data[a:b]) for a, b in zip(offsets, offsets[1:])]))
    return np.frombuffer(b"".join(out), dtype=">u4").reshape(-1, 4).astype(np.uint64)


def limbs_digest(limbs: np.ndarray) -> int:
    """Sum (mod 2**128) of the entry hashes given as limbs."""
    sums = limbs.sum(axis=0, dtype=np.uint64).tolist() if len(limbs) else [0, 0, 0, 0]
    return sum(int(v) << (32 * (3 - j)) for j, v in enumerate(sums)) % DIGEST_MOD


def modality_counts(table: pa.Table) -> dict[str, int]:
    if table.num_rows == 0:
        return {}
    vc = pc.value_counts(table.column("modality"))
    return {str(v["values"]): int(v["counts"]) for v in vc.to_pylist()}


def _payload_sizes(table: pa.Table) -> np.ndarray:
    sizes = np.zeros(table.num_rows, dtype=np.int64)
    for name in ("text", "data"):
        col = table.column(name)
        lengths = pc.binary_length(col).to_numpy(zero_copy_only=False)
        sizes += np.nan_to_num(lengths.astype(np.float64), nan=0).astype(np.int64)
    return sizes + 64


def plan_shards(table: pa.Table, target_bytes: int = TARGET_SHARD_BYTES) -> list[pa.Table]:
    """Sort by id and cut into slices of about `target_bytes` payload each (deterministic)."""
    order, cuts = plan_shard_rows(table, target_bytes)
    return [table.take(pa.array(order[a:b])) for a, b in cuts]


def plan_shard_rows(table: pa.Table, target_bytes: int = TARGET_SHARD_BYTES) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The id-sorted row order and the [start, end) cuts of each shard within it."""
    if table.num_rows == 0:
        return np.zeros(0, dtype=np.int64), []
    order = sort_order(ids_as_numpy(table.column("record_id")))
    cum = np.cumsum(_payload_sizes(table)[order])
    total = int(cum[-1])
    n_shards = max(1, -(-total // target_bytes))
    bounds = np.searchsorted(cum, [total * k / n_shards for k in range(1, n_shards)])
    starts = [0, *[int(b) + 1 for b in bounds]]
    ends = [*starts[1:], table.num_rows]
    return order, [(a, b) for a, b in zip(starts, ends) if b > a]


@dataclass(frozen=True)
class EncodedShard:
    ref: ShardRef
    data: bytes


def encode_shard(table: pa.Table) -> EncodedShard:
    """Serialize one sorted record slice to Parquet bytes and describe it as a ShardRef."""
    data = parquet_bytes(table)
    return EncodedShard(describe_shard(table, data), data)


def parquet_bytes(table: pa.Table, encoding: ShardEncoding | None = None) -> pa.Buffer:
    """The Parquet serialization of a sorted record slice, as a bytes-like Arrow buffer, in
    `encoding` (default: `SHARD_ENCODING`, read at call time).

    The sink is Arrow's own output stream, not a Python file object: writing to a Python
    object would take the GIL on every page and serialize the encoding threads.
    """
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, **(encoding or SHARD_ENCODING).write_options(table.column_names))
    return buf.getvalue()  # pa.Buffer: supports the buffer protocol (hashing, file writes)


def describe_shard(table: pa.Table, data: bytes, digest: int | None = None) -> ShardRef:
    """The ShardRef of a slice serialized as `data` (format 1's digest only when given)."""
    ids = ids_as_numpy(table.column("record_id"))
    return ShardRef(
        id=object_id(data),
        rows=table.num_rows,
        size=len(data),
        min_id=id_bytes(ids, 0).hex(),
        max_id=id_bytes(ids, len(ids) - 1).hex(),
        digest="" if digest is None else digest_hex(digest),
        by_modality=modality_counts(table),
    )


def decode_shard(data: bytes | pa.Buffer | str, shard_id: str | None = None, columns: list[str] | None = None) -> pa.Table:
    """Read a shard's Parquet bytes (or a local path). CorruptObjectError if unreadable.

    Uses ParquetFile directly (not the dataset API): no per-call discovery overhead.
    """
    try:
        if isinstance(data, str):
            pf = pq.ParquetFile(data, memory_map=True)
        else:
            pf = pq.ParquetFile(pa.BufferReader(data))
        return pf.read(columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise CorruptObjectError(f"shard {shard_id or '?'} is not a readable Parquet file: {e}") from e


def live_rows(table: pa.Table, deleted: tuple[int, ...]) -> pa.Table:
    """Drop the rows a manifest marks deleted."""
    if not deleted:
        return table
    mask = np.ones(table.num_rows, dtype=bool)
    mask[list(deleted)] = False
    return table.filter(pa.array(mask))


def served_rows(table: pa.Table, shard: ShardRef) -> pa.Table:
    """The rows of a whole shard table that readers serve: neither deleted nor erased."""
    return live_rows(table, tuple(sorted(set(shard.deleted) | set(shard.erased))) if shard.erased else shard.deleted)


def erased_live_mask(shard: ShardRef) -> np.ndarray | None:
    """For the live rows of a shard (deleted ones dropped), which are erased; None if none."""
    if not shard.erased:
        return None
    mask = np.zeros(shard.rows, dtype=bool)
    mask[list(shard.erased)] = True
    if shard.deleted:
        keep = np.ones(shard.rows, dtype=bool)
        keep[list(shard.deleted)] = False
        mask = mask[keep]
    return mask


def null_payload_rows(table: pa.Table) -> np.ndarray:
    """Row indices with neither a text nor a data payload (an erased row's shape)."""
    no_text = pc.is_null(table.column("text")).to_numpy(zero_copy_only=False)
    no_data = pc.is_null(table.column("data")).to_numpy(zero_copy_only=False)
    return np.flatnonzero(no_text & no_data)


def without_payloads(table: pa.Table, rows: list[int]) -> pa.Table:
    """The table with the payloads (text and data) of `rows` set to null, all else kept."""
    mask = np.zeros(table.num_rows, dtype=bool)
    mask[list(rows)] = True
    drop = pa.array(mask)
    for name in ("text", "data"):
        col = table.column(name)
        i = table.schema.get_field_index(name)
        table = table.set_column(i, table.schema.field(i), pc.if_else(drop, pa.scalar(None, col.type), col))
    return table


def iter_slices(table: pa.Table, size: int) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, size):
        yield table.slice(start, size)


def shard_counts(refs: list[ShardRef]) -> Counter[str]:
    c: Counter[str] = Counter()
    for r in refs:
        c.update(r.by_modality)
    return c


def payload_mismatches(table, id_hash: str = DEFAULT_ID_HASH) -> np.ndarray:
    """Row indices whose payload does not hash to the record id under `id_hash` (the
    repository's record-id hash; erased payloads excepted)."""
    ids = ids_as_numpy(table.column("record_id"))
    is_text = pc.is_valid(table.column("text")).to_numpy(zero_copy_only=False)
    is_data = pc.is_valid(table.column("data")).to_numpy(zero_copy_only=False)
    actual = np.empty(len(ids), dtype="S16")
    t_rows = np.flatnonzero(is_text)
    d_rows = np.flatnonzero(is_data & ~is_text)
    if len(t_rows):
        actual[t_rows] = np.frombuffer(b"".join(text_record_ids(table.column("text").take(t_rows), id_hash)), dtype="S16")
    if len(d_rows):
        actual[d_rows] = np.frombuffer(b"".join(binary_record_ids(table.column("data").take(d_rows), id_hash)), dtype="S16")
    check = is_text | is_data
    return np.flatnonzero(check & (actual != ids))


def indices(a: np.ndarray) -> pa.Array:
    """Row numbers as an Arrow int64 array, for `take`. `pa.array(ndarray)` imports pandas
    (pyarrow checks for pandas types): ~0.4 s and ~40 MB in a fresh process."""
    a = np.ascontiguousarray(a, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(a), [None, pa.py_buffer(a)])


def rows_of_row_groups(pf: pq.ParquetFile, rows: np.ndarray, cols: list[str]) -> pa.Table:
    """`rows` (sorted) of a Parquet file, decoding only the row groups that hold them."""
    md = pf.metadata
    starts = np.cumsum([0] + [md.row_group(i).num_rows for i in range(md.num_row_groups)])
    rg_of = np.searchsorted(starts, rows, side="right") - 1
    rgs = np.unique(rg_of)
    table = pf.read_row_groups([int(r) for r in rgs], columns=cols)
    sizes = starts[rgs + 1] - starts[rgs]
    base = np.zeros(len(starts), dtype=np.int64)
    base[rgs] = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return table.take(indices(base[rg_of] + (rows - starts[rg_of])))
