"""Batches built in one process: positions of the order -> (block, row) -> one Arrow `take`.

`BatchReader` gathers each content block once (`blocks.read_block_parts`: the block's rows
from the shards its checked packing names, read through the read tier, next shards
prefetched; zero-copy slices of the memory-mapped decoded shards, never one copy of the
block) and keeps a bounded set of gathered blocks; `RawBatch` is what a DataLoader worker sends (one
Arrow record batch, pickled as whole buffers); `Batch` is what the training loop gets.
Torch-free: the dataset and loader (`dataset`, `loader`) are the torch side.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..cache import Prefetcher
from ..records import ids_as_numpy
from ..shards import rows_of_row_groups
from . import order as order_mod
from .blocks import Block, indices, read_block_parts, take_rows

if TYPE_CHECKING:
    from .dataset import SnapshotDataset


class Batch(dict):
    """One batch: column name -> list (record_id: hex strings), plus where it lies in the order.

    `skipped`: ids of records left out because they did not decode (`on_decode_error="skip"`)."""

    epoch: int = 0
    index: int = 0
    position: int = 0
    skipped: tuple = ()


class BatchReader:
    """Builds batches in one process: positions -> (shard, row) -> Arrow take, shards decoded once."""

    def __init__(self, ds: SnapshotDataset, order: order_mod.EpochOrder):
        self.ds, self.order = ds, order
        self.repo = ds.open_repo()
        self.store = self.repo.store
        # block -> (its gathered parts, its rows' features block (FeatureJoin.block_of) or None)
        self.tables: OrderedDict[int, tuple[Block, np.ndarray | None]] = OrderedDict()
        self.features = ds._features
        self.table_bytes = 0
        self.read_cols = ["record_id", *ds.columns]
        self.offsets = order.manifest_offsets
        self.content_root = self.repo.root_of(ds.commit_id)
        self.block_order = order.shards_from(ds.position)  # blocks in the order they are needed
        self.block_rank = {b: i for i, b in enumerate(self.block_order)}
        self._groups: OrderedDict[int, list] = OrderedDict()
        self._files: OrderedDict[str, object] = OrderedDict()  # open Parquet files of verified shard bytes
        self._decoded: OrderedDict[str, pa.Table] = OrderedDict()  # memory-mapped decoded shards (tier.decoded)
        self._queued: set[str] = set()
        self.prefetcher = Prefetcher(ds.tier, self.store, [], ds.prefetch) if ds.prefetch > 0 and self.block_order else None

    def close(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.stop()

    def _block_groups(self, b: int) -> list:
        """Where block b's records lie (the checked packing's index over the block's range;
        its nodes come from the node packs, one range read each on a local store)."""
        hit = self._groups.get(b)
        if hit is None:
            start, stop = int(self.offsets[b]), int(self.offsets[b + 1])
            hit = self.repo.locate(self.ds.commit_id, ranks=(start, stop),
                                   packing=self.ds.packing, with_erased=True)  # positions hold
            self._groups[b] = hit
            while len(self._groups) > 8:
                self._groups.popitem(last=False)
        return hit

    def _read_group(self, group, cols: list[str]) -> pa.Table:
        """A block's rows of one shard, from the tier's verified copy.

        Where the tier keeps decoded copies (the local cache), the shard's memory-mapped
        Arrow sidecar: decoded once per machine, its pages shared by every worker, and a
        block's contiguous rows are a zero-copy slice of it. Otherwise the tier's verified
        bytes, only the row groups that hold the rows decoded (a shard serves several
        blocks; none decodes it whole)."""
        import pyarrow.parquet as pq

        decoded = self._decoded.get(group.shard)
        if decoded is None and group.shard not in self._files:
            decoded = self.ds.tier.decoded(self.store, group.shard)
            if decoded is not None:
                self._decoded[group.shard] = decoded
                while len(self._decoded) > 16:
                    self._decoded.popitem(last=False)
        if decoded is not None:
            rows = np.asarray(group.rows, dtype=np.int64)
            t = decoded.select(cols)
            if len(rows) and (np.diff(rows) == 1).all():  # a range of rows: no copy
                return t.slice(int(rows[0]), len(rows))
            return t.take(indices(rows))
        pf = self._files.get(group.shard)
        if pf is None:
            pf = pq.ParquetFile(pa.BufferReader(self.ds.tier.read(self.store, group.shard)))
            self._files[group.shard] = pf
            while len(self._files) > 16:
                self._files.popitem(last=False)
        return rows_of_row_groups(pf, group.rows, cols)

    def _prefetch_after(self, b: int) -> None:
        """Queue the shards of the blocks after b (in this epoch's order) for the prefetcher."""
        if self.prefetcher is None or b not in self.block_rank:
            return
        k = self.block_rank[b]
        for nb in self.block_order[k : k + 2]:
            new = [g.shard for g in self._block_groups(nb) if g.shard not in self._queued]
            self._queued.update(new)
            self.prefetcher.extend(new)

    def _shard(self, s: int) -> tuple[Block, np.ndarray | None]:
        hit = self.tables.get(s)
        if hit is not None:
            self.tables.move_to_end(s)
            return hit
        self._prefetch_after(s)
        groups = self._block_groups(s)
        t = read_block_parts(self.repo, self.ds.commit_id, int(self.offsets[s]), int(self.offsets[s + 1]),
                             self.ds.columns, read_group=self._read_group, groups=groups)
        # one join per block (id search + gather): batches then only index its rows
        fblock = None
        if self.features is not None:
            fblock = self.features.block_of(self.features.rows_for(t.ids))
        self.tables[s] = (t, fblock)
        self.table_bytes += t.nbytes + (fblock.nbytes if fblock is not None else 0)
        while self.table_bytes > self.ds.decoded_cache_bytes and len(self.tables) > 1:
            _, (old, old_fblock) = self.tables.popitem(last=False)
            self.table_bytes -= old.nbytes + (old_fblock.nbytes if old_fblock is not None else 0)
        return t, fblock

    def release_before(self, position: int) -> None:
        """Drop the gathered blocks no position >= `position` of this epoch reads (a worker's
        positions only grow), so a worker holds the blocks of about one window, not the epoch's."""
        until = self.order.shard_needed_until()
        for s in [s for s in self.tables if until[s] <= position]:
            t, fblock = self.tables.pop(s)
            self.table_bytes -= t.nbytes + (fblock.nbytes if fblock is not None else 0)

    def batch(self, plan: order_mod.RankPlan, i: int) -> RawBatch:
        positions = plan.batch_positions(i)
        if len(positions):
            self.release_before(int(positions.min()))
        flat = self.order.flat_at(positions)
        shard, row = self.order.flat_to_shard_row(flat)
        uniq = np.unique(shard)
        gathered = [self._shard(int(s)) for s in uniq]
        which = np.searchsorted(uniq, shard)
        table = take_rows([g[0] for g in gathered], which, row)
        fblock = None  # the batch's rows of the blocks' features, when features are joined
        if self.features is not None:
            first = gathered[0][1]
            fblock = np.empty((len(row), *first.shape[1:]), dtype=first.dtype)
            for k, (_, block_features) in enumerate(gathered):
                m = which == k
                fblock[m] = np.take(block_features, row[m], axis=0)
        if self.ds.packing.erased:  # an erased sample keeps its position and is skipped:
            keep = ~np.isin(ids_as_numpy(table.column("record_id")), _erased(self.ds.packing))  # a batch may be shorter
            if not keep.all():
                table = table.filter(pa.array(keep))
                fblock = fblock[keep] if fblock is not None else None
                positions = positions[keep]  # the others keep theirs (their augmentations too)
        batch = table.combine_chunks().to_batches()[0] if table.num_rows else pa.RecordBatch.from_pylist([], schema=table.schema)
        return RawBatch(batch, self.ds.epoch, i, plan.position_after(i), fblock, positions)


def _erased(packing) -> np.ndarray:
    return np.array(sorted(bytes.fromhex(h) for h in packing.erased), dtype="S16")


class RawBatch:
    """What a worker sends: one Arrow record batch (pickled as whole buffers) + its place.

    With features joined, `fblock` holds its rows' features (FeatureJoin.block_of: the
    features table row, -1 where it lacks the record, then the values), which the main
    process only turns into lists."""

    __slots__ = ("table", "epoch", "index", "position", "fblock", "positions")

    def __init__(self, table: pa.RecordBatch, epoch: int, index: int, position: int,
                 fblock: np.ndarray | None = None, positions: np.ndarray | None = None):
        self.table, self.epoch, self.index, self.position = table, epoch, index, position
        self.fblock = fblock
        # the global position of each row (an erased row's is left out with it): what seeds
        # each sample's augmentation
        self.positions = positions

    def __reduce__(self):
        return (RawBatch, (self.table, self.epoch, self.index, self.position, self.fblock, self.positions))

    def to_batch(self, fmt: str) -> Batch:
        """Python lists ("python") or Arrow arrays ("arrow"); record_id always hex strings."""
        out = Batch()
        raw = ids_as_numpy(self.table.column(0)).tobytes().hex()
        out["record_id"] = [raw[k : k + 32] for k in range(0, len(raw), 32)]
        for name, col in zip(self.table.schema.names[1:], self.table.columns[1:]):
            out[name] = col.to_pylist() if fmt == "python" else col
        out.epoch, out.index, out.position = self.epoch, self.index, self.position
        return out
