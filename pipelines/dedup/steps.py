"""Pipeline steps of dedup: DecideDuplicates (one global step over every record's small
dedup keys) and KeepRepresentatives (the kept candidates, keyed by record-id range).

The decision itself is `dedup.decide.decide_run`, a plain function over the keys.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataversion import Repo
from dataversion.records import RECORD_SCHEMA, ids_as_numpy

from ..config import IngestConfig
from .decide import decide_run
from .index import Membership, load_parent_index

DEDUP_KEY_COLUMNS = ["record_id", "modality", "source", "object_key", "line", "sig", "phash"]


def dedup_keys(candidates: pa.Table) -> pa.Table:
    """The columns DecideDuplicates needs (no payloads: the whole run's keys meet in one step)."""
    return candidates.select(DEDUP_KEY_COLUMNS)


class DecideDuplicates(beam.DoFn):
    """All dedup keys of the run (one list of small tables) -> one decision dict:
    {kept_sources, duplicates: [{source, record_id, duplicate_of, kind}], index: bytes}."""

    def __init__(self, repo_url: str, parent: str | None, config: IngestConfig):
        self.repo_url, self.parent, self.config = repo_url, parent, config

    def process(self, tables):
        rules = self.config.dedup
        repo = Repo.open(self.repo_url)
        parent_index = load_parent_index(repo, self.parent, rules)
        contains = Membership(repo, self.parent).contains if self.parent else None
        yield decide_run(tables, contains, parent_index, rules)


class KeepRepresentatives(beam.DoFn):
    """Candidate table + the decision (side input) -> (id range, record table of its kept
    rows) pairs; `partitions` ranges split the first byte of the record id evenly."""

    def __init__(self, partitions: int):
        self.partitions = partitions

    def process(self, table, decision):
        kept = pa.array(decision["kept_sources"], pa.string())
        # pHash travels to WriteShards for the features table, not into the shards
        t = table.filter(pc.is_in(table.column("source"), value_set=kept)).select(
            [*RECORD_SCHEMA.names, "phash"]
        )
        if not t.num_rows:
            return
        ids = ids_as_numpy(t.column("record_id"))
        first = np.frombuffer(ids.tobytes(), np.uint8)[::16].astype(np.int64)
        part = first * self.partitions // 256
        for p in np.unique(part).tolist():
            yield p, t.filter(pa.array(part == p))
