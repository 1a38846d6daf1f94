"""Pipeline steps WriteRange and WriteBandParts.

WriteRange: the join on record id of one id range (its candidates with payloads, its exact
duplicates, its near duplicates) -> the range's kept records written as shards, the range's
part of the run's dedup state (hashes by id range, a blob), and its results (shard refs,
duplicates, kept count, features) in the run's scratch area; it yields the kept records'
band rows keyed by band-key range, which WriteBandParts writes as the run's band parts."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa

from dataversion import Repo
from dataversion.hashing import canonical_json
from dataversion.records import RECORD_SCHEMA, ids_as_numpy

from ..config import IngestConfig
from ..dedup import sharded, state
from ..dedup.phash import image_keys
from ..features import record_features, table_bytes
from ..scratch import RunScratch


class WriteRange(beam.DoFn):
    """(id range, [("payload", candidates), ("exact", dups), ("near", dups)]) ->
    (modality x key range, band rows of the kept records); writes the range's shards, its
    hash part (a blob) and `parts/<range>.json`, `features/<range>.parquet` under the
    scratch prefix.

    The same records give the same shards whatever the runner: shards are cut per id
    range, whose number depends on the input size only.
    """

    def __init__(self, repo_url: str, scratch: str, config: IngestConfig, parts: int):
        self.repo_url, self.scratch, self.config, self.parts = repo_url, scratch, config, parts

    def setup(self):
        self.repo = Repo.open(self.repo_url)

    def process(self, element):
        part, values = element
        payloads, exact, near = [], [], []
        for tag, table in values:
            {"payload": payloads, "exact": exact, "near": near}[tag].append(table)
        if payloads:
            yield from self._write(part, payloads, exact, near)

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
        refs, index, bands = [], {}, []
        if kept.num_rows:
            features = record_features(kept.select([*RECORD_SCHEMA.names, "phash"]))
            store.put(scratch.features_part(part), table_bytes(features))
            refs = [
                r.to_dict()
                for r in self.repo.write_shards(
                    kept.select(RECORD_SCHEMA.names), self.config.target_shard_bytes
                )
            ]
            for m_i, (modality, ids, h) in enumerate(_entries(kept, self.config.dedup.num_perm)):
                if len(ids) == 0:
                    continue
                index[modality] = self.repo.put_blob(state.part_bytes(state.hash_rows(ids, h)))
                for k, t in state.band_parts(ids, h, modality, self.config.dedup, self.parts):
                    bands.append((m_i * self.parts + k, t))
        store.put(
            scratch.part(part),
            canonical_json(
                {"kept": kept.num_rows, "shards": refs, "duplicates": dups, "index": index}
            ),
        )
        return bands


class WriteBandParts(beam.DoFn):
    """(modality x key range, [band rows]) -> the run's band part and its fence (blobs),
    named in `index/bands-<key>.json` under the scratch prefix."""

    def __init__(self, repo_url: str, scratch: str, parts: int):
        self.repo_url, self.scratch, self.parts = repo_url, scratch, parts

    def setup(self):
        self.repo = Repo.open(self.repo_url)

    def process(self, element):
        key, tables = element
        rows = state.sort_bands(pa.concat_tables(list(tables)))
        modality, part = state.MODALITIES[key // self.parts], key % self.parts
        blob, fence = state.write_band_part(self.repo, rows)
        self.repo.store.put(
            RunScratch(self.scratch).band_part(key),
            canonical_json({"modality": modality, "part": part, "blob": blob, "fence": fence}),
        )


def _entries(kept: pa.Table, num_perm: int):
    """(modality, ids, hashes) of a range's kept text and image records."""
    mods = kept.column("modality")
    ids = ids_as_numpy(kept.column("record_id")).copy()
    sig = kept.column("sig").combine_chunks()
    sigs = sig.flatten().to_numpy().reshape(-1, num_perm)
    ph = image_keys(
        kept.column("phash").to_numpy().astype(np.uint64),
        kept.column("thumb").to_pylist() if "thumb" in kept.column_names else None,
    )
    t, i = sharded._is(mods, "text"), sharded._is(mods, "image")
    return [("text", ids[t], sigs[t]), ("image", ids[i], ph[i])]
