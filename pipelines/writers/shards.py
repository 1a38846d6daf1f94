"""Pipeline step WriteShards: the kept records of one record-id range -> shards in the
repository store, and their features -> the run's scratch area."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa

from dataversion import Repo
from dataversion.records import RECORD_SCHEMA

from ..features import record_features, table_bytes
from ..scratch import RunScratch


class WriteShards(beam.DoFn):
    """(id range, [record tables]) -> the ShardRef dicts of the shards written.

    The same records give the same shards whatever the runner: shards are cut per id
    range, whose number depends on the input size only.
    """

    def __init__(self, repo_url: str, target_bytes: int, scratch: str):
        self.repo_url, self.target_bytes, self.scratch = repo_url, target_bytes, scratch

    def setup(self):
        self.repo = Repo.open(self.repo_url)

    def process(self, element):
        part, tables = element
        table = pa.concat_tables(list(tables))
        features = record_features(table)
        self.repo.store.put(RunScratch(self.scratch).features_part(part), table_bytes(features))
        for ref in self.repo.write_shards(table.select(RECORD_SCHEMA.names), self.target_bytes):
            yield ref.to_dict()
