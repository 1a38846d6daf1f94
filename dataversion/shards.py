"""Shards: immutable Parquet files of records sorted by record id, named by their bytes' hash.

`plan_shards` sorts a record table by id and cuts it into shards of about `target_bytes`
of payload; the cut depends only on the records, so the same records give the same shards.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import CorruptObjectError
from .hashing import DIGEST_MOD, digest_hex, entry_hash, object_id
from .objects import ShardRef
from .records import RECORD_SCHEMA, ids_as_numpy, id_bytes

TARGET_SHARD_BYTES = 32 * 1024 * 1024
ROW_GROUP_ROWS = 4096


def shard_key(shard_id: str) -> str:
    """Store key of a shard."""
    return f"shards/{shard_id[:2]}/{shard_id}.parquet"


def sort_by_id(table: pa.Table) -> pa.Table:
    """The table with rows sorted by record id (byte order)."""
    ids = ids_as_numpy(table.column("record_id"))
    if len(ids) < 2:
        return table
    order = np.argsort(ids, kind="stable")
    if np.all(order[1:] > order[:-1]):
        return table
    return table.take(pa.array(order))


def entries_digest_of(table: pa.Table) -> int:
    """Sum of entry hashes of a record table (record id + metadata), mod 2**128."""
    ids = ids_as_numpy(table.column("record_id"))
    raw = ids.tobytes()
    mods = table.column("modality").to_pylist()
    srcs = table.column("source").to_pylist()
    labs = table.column("label").to_pylist()
    metas = table.column("meta").to_pylist()
    total = 0
    for i, (m, s, lab, me) in enumerate(zip(mods, srcs, labs, metas)):
        total += entry_hash(raw[16 * i : 16 * i + 16], m, s, lab, me)
    return total % DIGEST_MOD


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
    table = sort_by_id(table)
    if table.num_rows == 0:
        return []
    cum = np.cumsum(_payload_sizes(table))
    total = int(cum[-1])
    n_shards = max(1, -(-total // target_bytes))
    if n_shards == 1:
        return [table]
    # cut at the rows where the cumulative size crosses each multiple of total/n_shards
    bounds = np.searchsorted(cum, [total * k / n_shards for k in range(1, n_shards)])
    starts = [0, *[int(b) + 1 for b in bounds]]
    ends = [*starts[1:], table.num_rows]
    return [table.slice(a, b - a) for a, b in zip(starts, ends) if b > a]


@dataclass(frozen=True)
class EncodedShard:
    ref: ShardRef
    data: bytes


def encode_shard(table: pa.Table) -> EncodedShard:
    """Serialize one sorted record slice to Parquet bytes and describe it as a ShardRef."""
    buf = io.BytesIO()
    pq.write_table(
        table,
        buf,
        compression="snappy",
        row_group_size=ROW_GROUP_ROWS,
        use_dictionary=["modality", "label"],
        write_statistics=["record_id"],
    )
    data = buf.getvalue()
    ids = ids_as_numpy(table.column("record_id"))
    ref = ShardRef(
        id=object_id(data),
        rows=table.num_rows,
        size=len(data),
        min_id=id_bytes(ids, 0).hex(),
        max_id=id_bytes(ids, len(ids) - 1).hex(),
        digest=digest_hex(entries_digest_of(table)),
        by_modality=modality_counts(table),
    )
    return EncodedShard(ref, data)


def decode_shard(data: bytes | pa.Buffer | str, shard_id: str | None = None, columns: list[str] | None = None) -> pa.Table:
    """Read a shard's Parquet bytes (or a local path). CorruptObjectError if unreadable."""
    try:
        source = data if isinstance(data, str) else pa.BufferReader(data)
        return pq.read_table(source, columns=columns, schema=RECORD_SCHEMA if columns is None else None)
    except (pa.ArrowInvalid, OSError) as e:
        raise CorruptObjectError(f"shard {shard_id or '?'} is not a readable Parquet file: {e}") from e


def live_rows(table: pa.Table, deleted: tuple[int, ...]) -> pa.Table:
    """Drop the rows a manifest marks deleted."""
    if not deleted:
        return table
    mask = np.ones(table.num_rows, dtype=bool)
    mask[list(deleted)] = False
    return table.filter(pa.array(mask))


def iter_slices(table: pa.Table, size: int) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, size):
        yield table.slice(start, size)


def shard_counts(refs: list[ShardRef]) -> Counter[str]:
    c: Counter[str] = Counter()
    for r in refs:
        c.update(r.by_modality)
    return c
