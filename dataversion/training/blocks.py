"""Content-tree blocks: what the loader's order is made of, independent of packing.

A block is a contiguous range of a commit's records in id order, cut along the content
tree's subtrees (`TreeReader.blocks`): about `BLOCK_RECORDS` records each. Block sizes are a
function of the content root alone (the trie is history-independent), so the order built
over them (`order.EpochOrder(sizes=block sizes)`) is a function of (content root, seed,
epoch): repacking or re-pointing a packing never changes which record comes next.

A *flat index* is a record's rank in id order; block b covers the flat indices
[offsets[b], offsets[b+1]). `read_block` gathers a block's records from whatever shards the
checked packing names, in id order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ..records import ids_as_numpy
from ..shards import indices, rows_of_row_groups  # noqa: F401 - re-exported for the batch reader

BLOCK_RECORDS = 16384


def block_sizes(repo: Any, commit_id: str, target: int = BLOCK_RECORDS) -> tuple[int, ...]:
    """Sizes of the commit's content blocks, in id order (reads only upper tree nodes)."""
    return tuple(repo.tree(commit_id).blocks(target))


def read_block(repo: Any, commit_id: str, start: int, stop: int, columns: list[str],
               read_group: Any = None, groups: list | None = None, with_erased: bool = False) -> pa.Table:
    """The records of flat indices [start, stop) in id order, with `record_id` first then
    `columns`. Every row is checked against the content tree (`ObjectDB.check_rows`).
    `read_group(group, cols) -> pa.Table` returns the group's rows of a shard (a read tier's
    verified bytes); default: the repository's checked read of the whole shard."""
    cols = ["record_id", *[c for c in columns if c != "record_id"]]
    parts = []
    for group in repo.locate(commit_id, ranks=(start, stop), with_erased=with_erased) if groups is None else groups:
        if read_group is not None:
            t = read_group(group, cols)
        else:
            t = repo.read_shard_columns(group.shard, cols).take(indices(group.rows))
        repo.check_rows(commit_id, group, ids_as_numpy(t.column("record_id")))
        parts.append(t)
    if not parts:
        return pa.table({c: [] for c in cols})
    table = pa.concat_tables(parts).combine_chunks() if len(parts) > 1 else parts[0].combine_chunks()
    if len(parts) > 1:
        ids = ids_as_numpy(table.column("record_id"))
        if (ids[1:] < ids[:-1]).any():  # parts of id-ranged shards already follow each other
            table = table.take(indices(np.argsort(ids, kind="stable")))
    return table
