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


class Block:
    """A content block as the shards hold it: `parts`, one table per shard group (a
    zero-copy slice of a memory-mapped decoded shard where the rows are contiguous, each
    in id order and checked against the content tree), and for each of the block's rows in
    id order, the part and the row there that hold it (`part_of`, `row_in_part`). Nothing
    is copied to put the block in id order: a batch takes its rows from the parts."""

    __slots__ = ("parts", "part_of", "row_in_part", "ids")

    def __init__(self, parts: list[pa.Table]):
        self.parts = parts
        ids = [ids_as_numpy(t.column("record_id")) for t in parts]
        sizes = np.array([len(i) for i in ids], dtype=np.int64)
        part_of = np.repeat(np.arange(len(parts), dtype=np.int64), sizes)
        row_in_part = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        flat = np.concatenate(ids) if ids else np.empty(0, "S16")
        if len(flat) > 1 and (flat[1:] < flat[:-1]).any():  # parts interleave in id order
            order = np.argsort(flat, kind="stable")
            flat, part_of, row_in_part = flat[order], part_of[order], row_in_part[order]
        self.ids, self.part_of, self.row_in_part = flat, part_of, row_in_part

    @property
    def num_rows(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.parts) + self.ids.nbytes + self.part_of.nbytes + self.row_in_part.nbytes

    def table(self) -> pa.Table:
        """The block's rows in id order as one table (a copy where it spans parts)."""
        if len(self.parts) == 1:
            return self.parts[0].combine_chunks()
        return take_rows([self], np.zeros(self.num_rows, np.int64), np.arange(self.num_rows))


def take_rows(blocks: list[Block], which: np.ndarray, rows: np.ndarray) -> pa.Table:
    """Rows `rows[k]` of blocks `blocks[which[k]]`, in that order, as one table: one `take`
    per part the rows come from, then one reordering of the (batch-sized) result."""
    src = np.empty(len(rows), np.int64)
    src_row = np.empty(len(rows), np.int64)
    sources: list[pa.Table] = []
    for b, block in enumerate(blocks):
        m = np.flatnonzero(which == b)
        if not len(m):
            continue
        r = rows[m]
        src[m] = len(sources) + block.part_of[r]
        src_row[m] = block.row_in_part[r]
        sources.extend(block.parts)
    used = np.unique(src)
    if len(used) == 1:
        return sources[int(used[0])].take(indices(src_row))
    perm = np.argsort(src, kind="stable")
    s_sorted, r_sorted = src[perm], src_row[perm]
    bounds = np.searchsorted(s_sorted, used, side="left").tolist() + [len(perm)]
    parts = [sources[int(u)].take(indices(r_sorted[bounds[k] : bounds[k + 1]])) for k, u in enumerate(used)]
    inverse = np.empty_like(perm)
    inverse[perm] = np.arange(len(perm))
    return pa.concat_tables(parts).combine_chunks().take(indices(inverse))


def read_block_parts(repo: Any, commit_id: str, start: int, stop: int, columns: list[str],
                     read_group: Any = None, groups: list | None = None, with_erased: bool = False) -> Block:
    """The records of flat indices [start, stop) as a `Block`, with `record_id` first then
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
        if t.num_rows:
            parts.append(t)
    if not parts:
        parts = [pa.table({c: [] for c in cols})]
    return Block(parts)


def read_block(repo: Any, commit_id: str, start: int, stop: int, columns: list[str],
               read_group: Any = None, groups: list | None = None, with_erased: bool = False) -> pa.Table:
    """`read_block_parts` as one table in id order."""
    return read_block_parts(repo, commit_id, start, stop, columns, read_group, groups, with_erased).table()
