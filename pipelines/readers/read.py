"""Pipeline step ReadAndProcess: a batch of listed objects -> candidate records + an audit.

Reading is the only I/O here; splitting, cleaning and featurizing are
`pipelines.process.process_objects`, a plain function the tests call without Beam.

Memory per worker is bounded: an object over `max_object_bytes` (or a text over
`text.max_bytes`) is rejected `too_large` before it is read, and the batch is processed in
chunks of at most `max_batch_bytes` raw bytes and `max_batch_pixels` declared image pixels
(an object over a budget is a chunk of its own).
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from ..config import IngestConfig
from ..filters import Drop
from ..process import (
    WorkItem,
    declared_pixels,
    internal_error,
    line_source,
    process_objects,
    reject_erased,
    size_drop,
)
from .source import SourceFault, open_source

AUDIT = "audit"  # the tagged output: {objects, inputs, rejects} per batch


class ReadAndProcess(beam.DoFn):
    """A batch of work items -> candidate tables (main) + one audit dict (`AUDIT`).

    An object the store cannot serve fails the pipeline (`SourceFault`: nothing is
    committed or consumed); only properties of an object make it a reject.
    """

    def __init__(
        self,
        source_url: str,
        config: IngestConfig,
        denied: bytes = b"",
        repo_url: str | None = None,
        progress: str | None = None,
    ):
        self.source_url = source_url
        self.config = config
        self.denied = denied  # the repository's denylist: 16-byte record ids, concatenated
        # with both: a marker per batch under the `progress` prefix (`pipelines.progress`)
        self.repo_url, self.progress = repo_url, progress

    def setup(self):
        self.source = open_source(self.source_url)
        self.inputs = Metrics.counter("ingest", "inputs")
        self.rejected = Metrics.counter("ingest", "rejected")
        self.store = None
        if self.repo_url and self.progress:
            from dataversion import Repo

            self.store = Repo.open(self.repo_url).store

    def process(self, batch):
        audit = {"objects": len(batch), "inputs": 0, "rejects": []}
        items = [WorkItem(*wi) for wi in batch]
        denied = np.frombuffer(self.denied, dtype="S16") if self.denied else np.empty(0, "S16")
        candidates = 0
        for table in chunked_process(self.source, items, self.config, audit):
            table, erased = reject_erased(table, denied)
            audit["rejects"].extend(erased)
            if table.num_rows:
                candidates += table.num_rows
                yield table
        self.inputs.inc(audit["inputs"])
        self.rejected.inc(len(audit["rejects"]))
        if self.store is not None:
            self._mark(audit, candidates)
        yield beam.pvalue.TaggedOutput(AUDIT, audit)

    def _mark(self, audit: dict, candidates: int) -> None:
        """The batch's counts for the driver's progress; best effort (a failed write only
        makes the progress lag, never the run fail)."""
        import json
        import uuid

        marker = {
            "objects": audit["objects"],
            "inputs": audit["inputs"],
            "rejected": len(audit["rejects"]),
            "candidates": candidates,
        }
        try:
            self.store.put(f"{self.progress}{uuid.uuid4().hex}.json", json.dumps(marker).encode())
        except Exception:  # noqa: BLE001 - progress must not fail the run
            pass


def read_item(source, item: WorkItem, config: IngestConfig) -> bytes | Drop:
    """An item's bytes, or the Drop that rejects it unread. Raises SourceFault (store or
    machine fault) and nothing else."""
    if item.problem is not None:
        return Drop(*item.problem)
    try:
        check = None
        if item.size > config.text.max_bytes:
            key = item.key

            def check(head, size):
                return size_drop(key, head, size, config)

        return source.fetch(
            item.key, size=item.size, max_bytes=config.max_object_bytes, check_head=check
        )
    except SourceFault:
        raise
    except Exception as e:  # noqa: BLE001 - one input can only ever reject itself
        return internal_error(e)


def chunked_process(source, items: list[WorkItem], config: IngestConfig, audit: dict):
    """Read and process `items` in memory-bounded chunks; yields candidate tables and adds
    every unit to `audit` (inputs, rejects)."""
    chunk: list[tuple[WorkItem, bytes]] = []
    chunk_bytes = chunk_pixels = 0

    def flush():
        nonlocal chunk, chunk_bytes, chunk_pixels
        if chunk:
            out = process_objects(chunk, config)
            audit["inputs"] += out.inputs
            audit["rejects"].extend(out.rejects)
            chunk, chunk_bytes, chunk_pixels = [], 0, 0
            if out.candidates.num_rows:
                return out.candidates
        return None

    for item in items:
        if chunk and chunk_bytes + item.size > config.max_batch_bytes:
            table = flush()
            if table is not None:
                yield table
        got = read_item(source, item, config)
        if isinstance(got, Drop):
            audit["inputs"] += 1
            audit["rejects"].append(
                {"source": line_source(item.key, 0), "reason": got.reason, "message": got.message}
            )
            continue
        pixels = declared_pixels(got)
        if chunk and chunk_pixels + pixels > config.max_batch_pixels:
            table = flush()
            if table is not None:
                yield table
        chunk.append((item, got))
        chunk_bytes += len(got)
        chunk_pixels += pixels
    table = flush()
    if table is not None:
        yield table
