"""`dataversion repack`: rewrite the packing of commits into id-range shards of a target size.

For each content root of the commits given (default: every branch head), the records are
read in id order through the checked packing, cut into shards of about `target_bytes` of
payload (contiguous id ranges, no dead rows), and a new packing (index + shard table) is
written and the root's pointer moved to it by compare-and-swap. The content tree, commit ids,
log, diff, the loader's order and lineage answers do not change (none depends on packing);
the old shards become garbage for gc once no packing names them.

Crash-safe: shards, tree nodes and the packing object are written before the pointer moves,
so a process killed at any point leaves the old packing or the new one, both valid; a rerun
starts from whichever the pointer names and finishes (the same records and target give the
same shards and the same packing). Memory is bounded by about two shards: records stream
block by block.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..hashing import object_id
from ..inflight import InFlight
from ..packing import Packing, repoint_packing, shard_prefix, shard_table_key
from ..records import RECORD_SCHEMA, ids_as_numpy
from ..refs import HEADS
from ..shards import TARGET_SHARD_BYTES, _payload_sizes, parquet_bytes, shard_key
from ..training.blocks import read_block
from ..tree import INDEX, SHARDS, TreeWriter

if TYPE_CHECKING:
    from ..repo import Repo

_READ_RECORDS = 16384


def repack(repo: Repo, refs: list[str] | None = None, *, target_bytes: int = TARGET_SHARD_BYTES,
           progress: Any = None) -> dict[str, Any]:
    """Repack the snapshots `refs` name (default: every branch head). Returns shards and bytes
    before and after, and seconds. ConflictError if another repack moved a pointer first.
    `progress` (a tqdm-like bar) counts the records rewritten."""
    t0 = time.perf_counter()
    commits = [repo.resolve(r) for r in refs] if refs else sorted(set(repo.refs.list(HEADS).values()))
    by_root: dict[str, str] = {}
    for cid in commits:
        by_root.setdefault(repo.root_of(cid), cid)
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    repointed = 0
    with InFlight(repo.store, "repack"):
        for root, cid in sorted(by_root.items()):
            old = repo.read_packing(cid)
            for s in repo.shard_table(old):
                before[s.id] = s.size
            if old.count == 0:
                continue
            new = _rewrite(repo, cid, old, target_bytes, progress)
            for s in repo.shard_table(new):
                after[s.id] = s.size
            if new.id != old.id:
                repoint_packing(repo.store, root, old.id, new.id)
                repointed += 1
    return {
        "roots": len(by_root),
        "repointed": repointed,
        "shards_before": len(before),
        "bytes_before": sum(before.values()),
        "shards_after": len(after),
        "bytes_after": sum(after.values()),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _rewrite(repo: Repo, cid: str, old: Packing, target_bytes: int, progress: Any = None) -> Packing:
    """Write the new shards and trees of one root; the new packing (stored, not pointed to)."""
    index_parts: list[np.ndarray] = []
    table_parts: list[np.ndarray] = []
    pending: list[pa.Table] = []
    pending_bytes = 0

    def emit(part: pa.Table) -> None:
        data = parquet_bytes(part)
        sid = object_id(data)
        repo._put_or_freshen(shard_key(sid), bytes(data))
        ix = np.zeros(part.num_rows, INDEX)
        ix["id"], ix["shard"], ix["row"] = ids_as_numpy(part.column("record_id")), shard_prefix(sid), np.arange(part.num_rows)
        index_parts.append(ix)
        st = np.zeros(1, SHARDS)
        st[0] = (shard_table_key(sid), bytes.fromhex(sid), part.num_rows, part.num_rows, len(data))
        table_parts.append(st)

    cols = [c for c in RECORD_SCHEMA.names if c != "record_id"]
    for start in range(0, old.count, _READ_RECORDS):
        t = read_block(repo, cid, start, min(old.count, start + _READ_RECORDS), cols, with_erased=True)
        pending.append(t)
        pending_bytes += int(_payload_sizes(t).sum())
        if progress is not None:
            progress.update(t.num_rows)
        while pending_bytes >= target_bytes:
            buf = pa.concat_tables(pending).combine_chunks()
            cum = np.cumsum(_payload_sizes(buf))
            cut = int(np.searchsorted(cum, target_bytes)) + 1
            emit(buf.slice(0, cut))
            rest = buf.slice(cut)
            pending, pending_bytes = ([rest], int(cum[-1] - cum[cut - 1])) if rest.num_rows else ([], 0)
    if pending:
        buf = pa.concat_tables(pending).combine_chunks()
        if buf.num_rows:
            emit(buf)
    index_root = TreeWriter(repo.store, INDEX).build(np.concatenate(index_parts))
    shards_root = TreeWriter(repo.store, SHARDS).build(np.concatenate(table_parts))
    new = Packing(old.root, old.count, index_root, shards_root, old.erased)
    repo.write_packing(new)
    return new
