"""Pipeline step WriteRange: the join on record id of one id range (its candidates with
payloads, its exact duplicates, its near duplicates) -> the range's kept records written as
shards, and the range's results (shard refs, duplicates, kept count, features, the dedup
index entries of its kept records) in the run's scratch area."""

from __future__ import annotations

import io

import apache_beam as beam
import numpy as np
import pyarrow as pa

from dataversion import Repo
from dataversion.hashing import canonical_json
from dataversion.records import RECORD_SCHEMA, ids_as_numpy

from ..dedup import sharded
from ..features import record_features, table_bytes
from ..scratch import RunScratch


class WriteRange(beam.DoFn):
    """(id range, [("payload", candidates), ("exact", dups), ("near", dups)]) -> nothing;
    writes the range's shards and `parts/<range>.json`, `features/<range>.parquet`,
    `index/<range>.npz` under the scratch prefix.

    The same records give the same shards whatever the runner: shards are cut per id
    range, whose number depends on the input size only.
    """

    def __init__(self, repo_url: str, target_bytes: int, scratch: str, num_perm: int):
        self.repo_url, self.target_bytes, self.scratch = repo_url, target_bytes, scratch
        self.num_perm = num_perm

    def setup(self):
        self.repo = Repo.open(self.repo_url)

    def process(self, element):
        part, values = element
        payloads, exact, near = [], [], []
        for tag, table in values:
            {"payload": payloads, "exact": exact, "near": near}[tag].append(table)
        if payloads:
            self._write(part, payloads, exact, near)

    def _write(self, part, payloads, exact, near):
        table = pa.concat_tables(payloads).combine_chunks()
        kept, dups = sharded.decide_range(
            table,
            sharded.concat(exact, sharded.DUPS_SCHEMA),
            sharded.concat(near, sharded.DUPS_SCHEMA),
        )
        # a stable row order whatever order the runner delivered the batches in
        kept = kept.sort_by([("record_id", "ascending"), ("source", "ascending")])
        scratch = RunScratch(self.scratch)
        store = self.repo.store
        refs = []
        if kept.num_rows:
            features = record_features(kept.select([*RECORD_SCHEMA.names, "phash"]))
            store.put(scratch.features_part(part), table_bytes(features))
            refs = [
                r.to_dict()
                for r in self.repo.write_shards(kept.select(RECORD_SCHEMA.names), self.target_bytes)
            ]
            store.put(scratch.index_part(part), _index_part(kept, self.num_perm))
        store.put(
            scratch.part(part),
            canonical_json({"kept": kept.num_rows, "shards": refs, "duplicates": dups}),
        )


def _index_part(kept: pa.Table, num_perm: int) -> bytes:
    """The dedup index entries of a range's kept records (text signatures, image pHashes)."""
    mods = np.asarray(kept.column("modality").to_pylist(), object)
    ids = ids_as_numpy(kept.column("record_id")).copy()
    sigs = kept.column("sig").combine_chunks().values.to_numpy().reshape(-1, num_perm)
    ph = kept.column("phash").to_numpy().astype(np.uint64)
    t, i = mods == "text", mods == "image"
    buf = io.BytesIO()
    np.savez(
        buf,
        text_ids=ids[t].view(np.uint8).reshape(-1, 16),
        text_sigs=sigs[t],
        image_ids=ids[i].view(np.uint8).reshape(-1, 16),
        image_phash=ph[i],
    )
    return buf.getvalue()
