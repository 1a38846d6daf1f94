"""Pipeline steps of dedup: thin DoFns over the sharded functions of `dedup.sharded`, each
called on what one GroupByKey brought together (one record-id range, or one band-key
range), so no step sees the whole run or the whole branch.

Elements are (key, (tag, Arrow table)) pairs: the runners we must support
(beam-pyspark-runner) have no tagged outputs, so a DoFn that feeds several steps yields
tagged elements and `Tagged` picks one kind out.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np

from dataversion import Repo

from ..config import IngestConfig
from . import sharded

DEDUP_KEY_COLUMNS = [
    "record_id",
    "modality",
    "source",
    "object_key",
    "line",
    "sig",
    "phash",
    "thumb",
]


def dedup_keys(candidates):
    """The columns the global decision (`decide.decide_run`) needs; kept for comparisons."""
    return candidates.select(DEDUP_KEY_COLUMNS)


_PARENTS: dict = {}


def open_parent(repo_url: str, parent: str | None, config: IngestConfig, scratch: str):
    """The branch's dedup state for the sharded steps (the manifest the driver left in the
    run's scratch area, its parts read as asked), once per process and run."""
    from ..scratch import RunScratch
    from .membership import branch_contains
    from .state import BranchState, StateParent

    key = (repo_url, parent, config.dedup, scratch)
    got = _PARENTS.get(key)
    if got is None:
        repo = Repo.open(repo_url)
        state = BranchState.from_bytes(repo.store.get(RunScratch(scratch).state))
        contains = (lambda ids: branch_contains(repo, parent, ids)) if parent else None
        got = StateParent(repo, state, contains, config.dedup)
        _PARENTS.clear()
        _PARENTS[key] = got
    return got


def tagged(tag: str):
    """A FlatMap function keeping the (key, table) of elements (tag, key, table)."""

    def pick(element):
        if element[0] == tag:
            yield element[1], element[2]

    return pick


def as_tag(tag: str):
    """A Map function: (key, table) -> (key, (tag, table)), for a join by GroupByKey."""

    def wrap(kv):
        return kv[0], (tag, kv[1])

    return wrap


def _by_tag(values, schemas: dict) -> dict:
    got: dict = {t: [] for t in schemas}
    for tag, table in values:
        got[tag].append(table)
    return {t: sharded.concat(ts, schemas[t]) for t, ts in got.items()}


class DecideExact(beam.DoFn):
    """(id range, [dedup rows]) -> ("exact", range, duplicates), ("node", range, nodes),
    ("band", key range, band rows)."""

    def __init__(self, config: IngestConfig, parts: int):
        self.config, self.parts = config, parts

    def process(self, element):
        part, tables = element
        dups, nodes = sharded.decide_exact(
            sharded.concat(list(tables), sharded.ROWS_SCHEMA), self.config.dedup
        )
        if dups.num_rows:
            yield "exact", part, dups
        if nodes.num_rows:
            yield "node", part, nodes
            for key, rows in sharded.band_rows(nodes, self.config.dedup, self.parts):
                yield "band", key, rows


class _BranchStep(beam.DoFn):
    """A step that reads the branch's dedup state (`open_parent`, once per process)."""

    def __init__(
        self, repo_url: str, parent: str | None, config: IngestConfig, parts: int, scratch: str
    ):
        self.repo_url, self.parent, self.config, self.parts = repo_url, parent, config, parts
        self.scratch = scratch

    def branch(self):
        return open_parent(self.repo_url, self.parent, self.config, self.scratch)


class BucketPairs(_BranchStep):
    """(key range, [band rows]) -> (id range of a, candidate pairs), the branch's members
    of the same buckets included."""

    def process(self, element):
        key, tables = element
        modality, part = ("text", key) if key < self.parts else ("image", key - self.parts)
        branch = self.branch()
        new = sharded.concat(list(tables), sharded.BANDS_SCHEMA)
        pairs = sharded.bucket_pairs(
            new,
            # only the branch's rows of the run's keys: read in proportion to the run
            branch.band_rows(modality, part, self.parts, new.column("key").to_numpy()),
            self.config.dedup.max_window,
        )
        ids = sharded._ids(pairs, "a")
        yield from sharded.split_by(pairs, sharded.id_range(ids, self.parts))


class AttachA(beam.DoFn):
    """(id range, [("node", nodes), ("pair", pairs)]) -> (id range of b, pairs + a's data)."""

    def __init__(self, parts: int):
        self.parts = parts

    def process(self, element):
        _, values = element
        got = _by_tag(values, {"node": sharded.ROWS_SCHEMA, "pair": sharded.PAIRS_SCHEMA})
        yield from sharded.attach_a(got["node"], got["pair"], self.parts)


class VerifyB(_BranchStep):
    """(id range, [("node", nodes), ("att", pairs)]) -> (id range, directed edges) of the
    verified pairs."""

    def process(self, element):
        _, values = element
        got = _by_tag(values, {"node": sharded.ROWS_SCHEMA, "att": sharded.ATTACHED_SCHEMA})
        branch = self.branch()
        edges = sharded.verify_b(got["node"], got["att"], branch.hashes, self.config.dedup)
        yield from sharded.directed_edges(edges, self.parts)


def _state_out(part, nodes, adj, msgs):
    yield part, ("state", nodes)
    yield part, ("adj", adj)
    for q, m in msgs:
        yield q, ("msg", m)


class FirstLabels(beam.DoFn):
    """(id range, [directed edges]) -> the propagation state (round 0)."""

    def __init__(self, parts: int):
        self.parts = parts

    def process(self, element):
        part, tables = element
        import pyarrow as pa

        nodes, adj, msgs = sharded.first_labels(pa.concat_tables(list(tables)), self.parts)
        yield from _state_out(part, nodes, adj, msgs)


_STATE = {"state": sharded.NODE_SCHEMA, "adj": sharded.ADJ_SCHEMA, "msg": sharded.MSG_SCHEMA}


class Propagate(beam.DoFn):
    """One round of min-label propagation for one id range. With `last`, the check after
    the last round: a label that still changes fails the run (NotConverged), else the
    cluster members that are not representatives, keyed by the range of their
    representative."""

    def __init__(self, parts: int, last: bool = False):
        self.parts, self.last = parts, last

    def process(self, element):
        part, values = element
        got = _by_tag(values, _STATE)
        if got["state"].num_rows == 0:
            return iter(())  # messages for nodes of no range cannot happen; nothing to carry
        nodes, adj, msgs, changed = sharded.propagate(
            got["state"], got["adj"], got["msg"], self.parts
        )
        if not self.last:
            return _state_out(part, nodes, adj, msgs)
        return self._members(nodes, changed)

    def _members(self, nodes, changed):
        if changed:
            raise sharded.NotConverged(sharded.NOT_CONVERGED)
        for q, members in sharded.near_members(nodes, self.parts):
            yield q, ("member", members)


class FinalSimilarity(_BranchStep):
    """(id range, [("node", nodes), ("member", members)]) -> (id range of the member,
    ("near", its duplicate row)) with its similarity to the representative."""

    def process(self, element):
        _, values = element
        got = _by_tag(values, {"node": sharded.ROWS_SCHEMA, "member": sharded.FINAL_SCHEMA})
        if got["member"].num_rows:
            branch = self.branch()
            for q, rows in sharded.final_similarity(
                got["node"], got["member"], branch.hashes, self.config.dedup, self.parts
            ):
                yield q, ("near", rows)


def id_ranges_of(table, parts: int):
    """[(id range, rows)] of a candidate table."""
    return sharded.split_by(table, sharded.id_range(sharded._ids(table), parts))


def rows_for(candidates, repo_url: str, parent: str | None, config: IngestConfig, scratch, mtimes):
    """The dedup rows of a candidate table (in the reading worker: the branch membership
    test runs here, on the batch's ids)."""
    branch = open_parent(repo_url, parent, config, scratch)
    ids = sharded._ids(candidates)
    return sharded.dedup_rows(candidates, branch.contains(ids), config.dedup, mtimes)


def mtimes_of(items) -> dict[str, int]:
    return {it.key: sharded.mtime_of(it.etag) for it in items}


__all__ = [
    "AttachA",
    "BucketPairs",
    "DecideExact",
    "FinalSimilarity",
    "FirstLabels",
    "Propagate",
    "VerifyB",
    "as_tag",
    "dedup_keys",
    "id_ranges_of",
    "np",
    "open_parent",
    "rows_for",
    "tagged",
]
