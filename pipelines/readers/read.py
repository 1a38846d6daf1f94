"""Pipeline step ReadAndProcess: one piece of the listing -> candidate records + an audit.

The driver writes the listing as pieces in the repository store (`pipelines.scratch`);
a worker reads its piece, the objects it names (one source client per worker), and
writes the piece's audit next to it. A piece's outputs are also kept under a key of its
content, config, parent and id ranges (`PieceCache`): the rerun of a killed run reuses the
pieces that run finished instead of reading their objects again. Reading is the only I/O here besides that; splitting, cleaning and featurizing are
`pipelines.process.process_objects`, a plain function the tests call without Beam.

Memory per worker is bounded: an object over `max_object_bytes` (or a text over
`text.max_bytes`) is rejected `too_large` before it is read, and the batch is processed in
chunks of at most `max_batch_bytes` raw bytes and `max_batch_pixels` declared image pixels
(an object over a budget is a chunk of its own).
"""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from dataversion import Repo
from dataversion.hashing import DEFAULT_ID_HASH, canonical_json

from ..config import IngestConfig
from ..dedup.state import part_bytes, read_part
from ..dedup.steps import id_ranges_of, mtimes_of, rows_for
from ..filters import Drop
from ..gcpause import gc_paused
from ..process import (
    WorkItem,
    declared_pixels,
    internal_error,
    line_source,
    process_objects,
    reject_erased,
    size_drop,
)
from ..scratch import PieceCache, RunScratch
from .source import SourceFault, open_source


class ReadAndProcess(beam.DoFn):
    """A listing piece number -> ("payload", id range, candidates) and ("rows", id range,
    dedup rows) elements; the piece's audit {objects, inputs, rejects} goes to the store.

    An object the store cannot serve fails the pipeline (`SourceFault`: nothing is
    committed or consumed); only properties of an object make it a reject.
    """

    def __init__(
        self,
        source_url: str,
        repo_url: str,
        config: IngestConfig,
        parent,
        scratch: str,
        parts: int,
        denied: bytes = b"",
        progress: str | None = None,
    ):
        self.source_url, self.repo_url, self.config = source_url, repo_url, config
        self.parent, self.scratch, self.parts = parent, scratch, parts
        self.denied = denied  # the repository's denylist: 16-byte record ids, concatenated
        # a marker per piece under the `progress` prefix (`pipelines.progress`)
        self.progress = progress

    def setup(self):
        self.source = open_source(self.source_url)
        self.repo = Repo.open(self.repo_url)
        self.inputs = Metrics.counter("ingest", "inputs")
        self.rejected = Metrics.counter("ingest", "rejected")
        self.store = self.repo.store if self.progress else None

    def process(self, piece: int):
        scratch = RunScratch(self.scratch)
        store = self.repo.store
        raw_piece = store.get(scratch.listing_piece(piece))
        with gc_paused():  # thousands of small containers (`gcpause`)
            doc = json.loads(raw_piece)
            items = [WorkItem(*wi) for wi in doc["items"]]
        cache = PieceCache(doc["cache"])
        if store.exists(cache.done):  # finished by an earlier, killed run: reuse it
            audit = json.loads(store.get(cache.done))
            for info in sorted(store.list(cache.prefix), key=lambda i: i.key):
                name = info.key.rsplit("/", 1)[1]
                if name.endswith(".arrow"):
                    _, tag, part = name[: -len(".arrow")].split("-")
                    yield tag, int(part), read_part(store.get(info.key))
        else:
            audit = {"objects": len(items), "inputs": 0, "rejects": []}
            mtimes = mtimes_of(items)
            denied = np.frombuffer(self.denied, dtype="S16") if self.denied else np.empty(0, "S16")
            n = 0
            for table in chunked_process(self.source, items, self.config, audit, self.repo.id_hash):
                table, erased = reject_erased(table, denied)
                audit["rejects"].extend(erased)
                if not table.num_rows:
                    continue
                rows = rows_for(
                    table, self.repo_url, self.parent, self.config, self.scratch, mtimes
                )
                for tag, t in (("payload", table), ("rows", rows)):
                    for part, sub in id_ranges_of(t, self.parts):
                        store.put(cache.output(n, tag, part), part_bytes(sub))
                        n += 1
                        yield tag, part, sub
            store.put(cache.done, canonical_json(audit))
        store.put(scratch.audit_piece(piece), canonical_json(audit))
        self.inputs.inc(audit["inputs"])
        self.rejected.inc(len(audit["rejects"]))
        if self.store is not None:
            self._mark(audit, audit["inputs"] - len(audit["rejects"]))

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


def chunked_process(source, items: list[WorkItem], config: IngestConfig, audit: dict, id_hash: str = DEFAULT_ID_HASH):
    """Read and process `items` in memory-bounded chunks; yields candidate tables (record
    ids with `id_hash`, the repository's) and adds every unit to `audit` (inputs, rejects)."""
    chunk: list[tuple[WorkItem, bytes]] = []
    chunk_bytes = chunk_pixels = 0

    def flush():
        nonlocal chunk, chunk_bytes, chunk_pixels
        if chunk:
            out = process_objects(chunk, config, id_hash)
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
