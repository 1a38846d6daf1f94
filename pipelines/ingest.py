"""The ingestion pipeline: raw objects -> cleaned, deduplicated records -> one commit.

    ListedObjects -> Spread -> BatchObjects -> ReadAndProcess --candidates--> DedupKeys
        -> GatherDedupKeys -> DecideDuplicates (global: exact ids, MinHash LSH, pHash, parent)
    candidates + decision (side input) -> KeepRepresentatives -> KeyByIdRange
        -> GroupByIdRange -> WriteShards -> GatherShardRefs -> SaveShardRefs
    ReadAndProcess --audit--> GatherAudit -> SaveAudit

The driver (`run_ingest`) lists the source, drops objects the branch already consumed,
runs the pipeline on any Beam runner, checks `inputs == kept + duplicates + rejected`, then
commits the prewritten shards with `expected_parent` (compare-and-swap). Workers hand their
small results back through the repository's store (`tmp/ingest/<run>/`), which every runner
can reach; a run killed before the commit leaves only unreferenced objects.

Shards are written per record-id range (the number of ranges depends on the input size
only), so the same input gives the same shards whatever the runner and worker count.
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import dataversion
from dataversion import Repo
from dataversion.errors import DataversionError, NotFoundError
from dataversion.hashing import canonical_json
from dataversion.objects import ShardRef
from dataversion.records import ids_as_numpy, ids_to_hex

from .config import PIPELINE_VERSION, IngestConfig
from .process import WorkItem, process_objects
from .readers.labels import LabelResolver
from .readers.source import open_source

CONSUMED = "consumed"
REJECTS = "rejects"
DUPLICATES = "duplicates"
CODE_VERSION = f"dataversion {dataversion.__version__} / ingest pipeline {PIPELINE_VERSION}"
_SCRATCH = "tmp/ingest/"
_FEATURES_SCRATCH = "features/"
_RECORD_COLUMNS = ["record_id", "modality", "source", "label", "meta", "text", "data"]


# ---------------------------------------------------------------------------- report
@dataclass
class IngestReport:
    """What a run did. `commit` is None when nothing was new."""

    commit: str | None
    parent: str | None
    branch: str
    source: str
    objects: int = 0  # new objects consumed by this run
    objects_skipped: int = 0  # objects the branch had already consumed
    inputs: int = 0  # units: objects, or JSONL lines of JSONL objects
    kept: int = 0
    duplicates: int = 0
    rejected: int = 0
    by_modality: dict[str, int] = field(default_factory=dict)  # kept records by modality
    reasons: dict[str, int] = field(default_factory=dict)  # rejects by reason
    duplicate_kinds: dict[str, int] = field(default_factory=dict)  # exact / near
    shards_written: int = 0
    features: str | None = None  # store key of the commit's features table
    config_hash: str = ""
    code_version: str = CODE_VERSION
    sidecar_errors: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------- DoFns
def _beam():
    import apache_beam as beam

    return beam


def _make_dofns():
    """DoFn classes are built on first use so that importing this module needs no Beam."""
    beam = _beam()
    from apache_beam.metrics import Metrics

    class ReadAndProcess(beam.DoFn):
        """A batch of work items -> one candidate table (main) + one audit dict ('audit')."""

        def __init__(self, source_url: str, config: IngestConfig):
            self.source_url = source_url
            self.config = config

        def setup(self):
            self.source = open_source(self.source_url)
            self.inputs = Metrics.counter("ingest", "inputs")
            self.rejected = Metrics.counter("ingest", "rejected")

        def process(self, batch):
            items, read_rejects = [], []
            for wi in batch:
                item = WorkItem(*wi)
                try:
                    items.append((item, self.source.read(item.key)))
                except (OSError, DataversionError) as e:
                    read_rejects.append(
                        {
                            "source": item.key,
                            "reason": "unreadable",
                            "message": f"cannot read object: {e}",
                        }
                    )
            out = process_objects(items, self.config)
            rejects = out.rejects + read_rejects
            self.inputs.inc(out.inputs + len(read_rejects))
            self.rejected.inc(len(rejects))
            if out.candidates.num_rows:
                yield out.candidates
            yield beam.pvalue.TaggedOutput(
                "audit",
                {
                    "objects": len(batch),
                    "inputs": out.inputs + len(read_rejects),
                    "rejects": rejects,
                },
            )

    class DecideDuplicates(beam.DoFn):
        """All dedup keys of the run (one list of small tables) -> one decision dict."""

        def __init__(self, repo_url: str, parent: str | None, config: IngestConfig):
            self.repo_url, self.parent, self.config = repo_url, parent, config

        def process(self, tables):
            import pyarrow as pa

            from .dedup.decide import decide_duplicates
            from .dedup.index import load_parent_index

            rules = self.config.dedup
            repo = Repo.open(self.repo_url)
            parent_ids = repo.record_ids(self.parent) if self.parent else None
            parent_index = load_parent_index(repo, self.parent, rules)
            tables = [t for t in tables if t.num_rows]
            if tables:
                t = pa.concat_tables(tables)
                # a deterministic order whatever order the runner delivered the batches in
                keys = np.asarray(t.column("object_key").to_pylist(), dtype=object)
                lines = t.column("line").to_numpy()
                order = sorted(range(t.num_rows), key=lambda i: (keys[i], lines[i]))
                t = t.take(pa.array(order, pa.int64()))
                ids = ids_as_numpy(t.column("record_id")).copy()
                modality = np.asarray(t.column("modality").to_pylist(), dtype=object)
                sig_col = t.column("sig").combine_chunks()
                sigs = (
                    sig_col.values.to_numpy().reshape(t.num_rows, rules.num_perm)
                    if t.num_rows
                    else np.empty((0, rules.num_perm), np.uint32)
                )
                phash = t.column("phash").to_numpy().astype(np.uint64)
                sources = t.column("source").to_pylist()
            else:
                ids = np.empty(0, "S16")
                modality = np.empty(0, object)
                sigs = np.empty((0, rules.num_perm), np.uint32)
                phash = np.empty(0, np.uint64)
                sources = []
            contains = (
                parent_ids.contains
                if parent_ids is not None
                else (lambda x: np.zeros(len(x), bool))
            )
            d = decide_duplicates(
                ids, modality, np.arange(len(ids)), sigs, phash, contains, parent_index, rules
            )
            dup_rows = np.flatnonzero(~d.keep)
            dup_hex = ids_to_hex(d.duplicate_of[dup_rows]) if len(dup_rows) else []
            own_hex = ids_to_hex(ids[dup_rows]) if len(dup_rows) else []
            duplicates = [
                {"source": sources[r], "record_id": own, "duplicate_of": of, "kind": d.kind[r]}
                for r, own, of in zip(dup_rows.tolist(), own_hex, dup_hex)
            ]
            kept_text = d.keep & (modality == "text")
            kept_image = d.keep & (modality == "image")
            index = parent_index.extended(
                ids[kept_text], sigs[kept_text], ids[kept_image], phash[kept_image]
            )
            yield {
                "kept_sources": [s for s, k in zip(sources, d.keep.tolist()) if k],
                "duplicates": duplicates,
                "index": index.to_bytes(),
            }

    class KeepRepresentatives(beam.DoFn):
        """Candidate table -> (id range, record table of its kept rows) pairs."""

        def __init__(self, partitions: int):
            self.partitions = partitions

        def process(self, table, decision):
            import pyarrow as pa
            import pyarrow.compute as pc

            kept = pa.array(decision["kept_sources"], pa.string())
            # pHash travels to WriteShards for the features table, not into the shards
            t = table.filter(pc.is_in(table.column("source"), value_set=kept)).select(
                [*_RECORD_COLUMNS, "phash"]
            )
            if not t.num_rows:
                return
            ids = ids_as_numpy(t.column("record_id"))
            first = np.frombuffer(ids.tobytes(), np.uint8)[::16].astype(np.int64)
            part = first * self.partitions // 256
            for p in np.unique(part).tolist():
                yield p, t.filter(pa.array(part == p))

    class WriteShards(beam.DoFn):
        """All kept records of one id range -> shards in the repository store, and the
        features of those records -> `<scratch>features/<range>.parquet`."""

        def __init__(self, repo_url: str, target_bytes: int, scratch: str):
            self.repo_url, self.target_bytes, self.scratch = repo_url, target_bytes, scratch

        def setup(self):
            self.repo = Repo.open(self.repo_url)

        def process(self, element):
            import pyarrow as pa

            from .features import record_features, table_bytes

            part, tables = element
            table = pa.concat_tables(list(tables))
            features = record_features(table)
            self.repo.store.put(
                f"{self.scratch}{_FEATURES_SCRATCH}{part:03d}.parquet", table_bytes(features)
            )
            for ref in self.repo.write_shards(table.select(_RECORD_COLUMNS), self.target_bytes):
                yield ref.to_dict()

    class SaveToStore(beam.DoFn):
        """Write one element (JSON-able, or bytes) to the repository store under `key`."""

        def __init__(self, repo_url: str, key: str, pick: str | None = None):
            self.repo_url, self.key, self.pick = repo_url, key, pick

        def process(self, value):
            if self.pick:
                value = value[self.pick]
            data = value if isinstance(value, bytes) else canonical_json(value)
            Repo.open(self.repo_url).store.put(self.key, data)

    return ReadAndProcess, DecideDuplicates, KeepRepresentatives, WriteShards, SaveToStore


def _dedup_keys(table):
    return table.select(["record_id", "modality", "source", "object_key", "line", "sig", "phash"])


def build_pipeline(
    pipeline,
    *,
    source_url: str,
    repo_url: str,
    work: list[WorkItem],
    config: IngestConfig,
    parent: str | None,
    scratch: str,
    partitions: int,
):
    """Add the ingestion transforms to a `beam.Pipeline` (any runner).

    Results land in the repository store under `scratch` (audit.json, decision.json,
    index.npz, shards.json) for `run_ingest` to check and commit.
    """
    beam = _beam()
    ReadAndProcess, DecideDuplicates, KeepRepresentatives, WriteShards, SaveToStore = _make_dofns()
    out = (
        pipeline
        | "ListedObjects" >> beam.Create([(w.key, w.etag, w.size, w.label) for w in work])
        | "Spread" >> beam.Reshuffle()
        | "BatchObjects" >> beam.BatchElements(min_batch_size=1, max_batch_size=64)
        | "ReadAndProcess"
        >> beam.ParDo(ReadAndProcess(source_url, config)).with_outputs("audit", main="candidates")
    )
    candidates = out.candidates
    decision = (
        candidates
        | "DedupKeys" >> beam.Map(_dedup_keys)
        | "GatherDedupKeys" >> beam.combiners.ToList()
        | "DecideDuplicates" >> beam.ParDo(DecideDuplicates(repo_url, parent, config))
    )
    _ = (
        decision
        | "SaveDecision"
        >> beam.Map(lambda d: {"duplicates": d["duplicates"], "kept": len(d["kept_sources"])})
        | "WriteDecision" >> beam.ParDo(SaveToStore(repo_url, scratch + "decision.json"))
    )
    _ = decision | "SaveIndex" >> beam.ParDo(
        SaveToStore(repo_url, scratch + "index.npz", pick="index")
    )
    _ = (
        candidates
        | "KeepRepresentatives"
        >> beam.ParDo(KeepRepresentatives(partitions), beam.pvalue.AsSingleton(decision))
        | "GroupByIdRange" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(WriteShards(repo_url, config.target_shard_bytes, scratch))
        | "GatherShardRefs" >> beam.combiners.ToList()
        | "SaveShardRefs" >> beam.ParDo(SaveToStore(repo_url, scratch + "shards.json"))
    )
    _ = (
        out.audit
        | "GatherAudit" >> beam.combiners.ToList()
        | "SaveAudit" >> beam.ParDo(SaveToStore(repo_url, scratch + "audit.json"))
    )
    return pipeline


# ---------------------------------------------------------------------------- driver
def _consumed_of(repo: Repo, commit_id: str | None) -> dict[str, dict[str, str]]:
    if commit_id is None:
        return {}
    data = repo.read_attachment(commit_id, CONSUMED)
    return json.loads(data) if data else {}


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[ingest] {msg}", file=sys.stderr, flush=True)


def _pipeline_options(beam_args):
    from apache_beam.options.pipeline_options import PipelineOptions

    args = list(beam_args)
    if not any(a.startswith("--runner") for a in args):
        args.append("--runner=DirectRunner")
    return PipelineOptions(args)


def run_ingest(
    source: str,
    repo_url: str,
    branch: str = "main",
    config: IngestConfig | None = None,
    beam_args: tuple[str, ...] | list[str] = (),
    progress: bool = False,
    message: str = "",
) -> IngestReport:
    """Ingest every object under `source` the branch has not consumed yet; one commit.

    Creates the repository if missing. Returns the report (commit None when nothing was
    new). Raises ConflictError if the branch moved during the run (nothing is committed;
    rerun), DataversionError if the accounting does not balance.
    """
    import apache_beam as beam

    started = time.monotonic()
    config = config or IngestConfig()
    src = open_source(source)
    repo = Repo.init(repo_url)
    parent = repo.branch_tip(branch)
    report = IngestReport(None, parent, branch, src.url, config_hash=config.hash)

    listing = src.list()
    resolver = LabelResolver(
        listing,
        src.read,
        folder_labels=config.folder_labels,
        label_map=config.label_map,
        lowercase=config.lowercase_labels,
    )
    report.sidecar_errors = resolver.errors
    consumed = _consumed_of(repo, parent)
    seen = consumed.get(src.url, {})
    objects = [o for o in listing if o.key not in resolver.sidecars]
    new = [o for o in objects if seen.get(o.key) != o.etag]
    report.objects = len(new)
    report.objects_skipped = len(objects) - len(new)
    if not new:
        report.message = (
            f"nothing new: {report.objects_skipped} object(s) already consumed by {branch}"
        )
        report.elapsed_s = round(time.monotonic() - started, 3)
        return report

    work = [WorkItem(o.key, o.etag, o.size, resolver.label_of(o.key)) for o in new]
    total_bytes = sum(o.size for o in new)
    partitions = max(1, min(256, math.ceil(total_bytes / config.target_shard_bytes)))
    run_id = uuid.uuid4().hex
    scratch = f"{_SCRATCH}{run_id}/"
    _log(
        progress,
        f"{len(new)} new object(s), {report.objects_skipped} already consumed; running the pipeline",
    )
    try:
        with beam.Pipeline(options=_pipeline_options(beam_args)) as p:
            build_pipeline(
                p,
                source_url=src.url,
                repo_url=repo.url,
                work=work,
                config=config,
                parent=parent,
                scratch=scratch,
                partitions=partitions,
            )
        _log(progress, "pipeline done; checking the accounting")
        store = repo.store
        audit = json.loads(store.get(scratch + "audit.json"))
        decision = json.loads(store.get(scratch + "decision.json"))
        index_bytes = store.get(scratch + "index.npz")
        shard_refs = sorted(
            (ShardRef.from_dict(d) for d in json.loads(store.get(scratch + "shards.json"))),
            key=lambda s: (s.min_id, s.id),
        )
    except NotFoundError as e:
        raise DataversionError(f"the pipeline did not produce its results ({e})") from e

    rejects = sorted((r for a in audit for r in a["rejects"]), key=lambda r: r["source"])
    duplicates = sorted(decision["duplicates"], key=lambda r: r["source"])
    report.inputs = sum(a["inputs"] for a in audit)
    report.rejected = len(rejects)
    report.duplicates = len(duplicates)
    report.kept = decision["kept"]
    report.reasons = dict(sorted(Counter(r["reason"] for r in rejects).items()))
    report.duplicate_kinds = dict(sorted(Counter(d["kind"] for d in duplicates).items()))
    by_mod: Counter[str] = Counter()
    for s in shard_refs:
        by_mod.update(s.by_modality)
    report.by_modality = dict(sorted(by_mod.items()))
    written = sum(s.live_rows for s in shard_refs)
    objects_done = sum(a["objects"] for a in audit)
    if (
        objects_done != len(work)
        or report.inputs != report.kept + report.duplicates + report.rejected
        or written != report.kept
    ):
        raise DataversionError(
            f"ingest accounting does not balance: {len(work)} objects listed, {objects_done} processed; "
            f"inputs {report.inputs} != kept {report.kept} + duplicates {report.duplicates} + rejected {report.rejected}, "
            f"or {written} records written; nothing committed"
        )

    consumed = {**consumed, src.url: {**seen, **{o.key: o.etag for o in new}}}
    counts = {
        "inputs": report.inputs,
        "kept": report.kept,
        "duplicates": report.duplicates,
        "rejected": report.rejected,
        "by_modality": report.by_modality,
        "reasons": report.reasons,
        "duplicate_kinds": report.duplicate_kinds,
    }
    provenance = {
        "pipeline": "pipelines.ingest",
        "source": src.url,
        "objects_consumed": len(new),
        "config_hash": config.hash,
        "config": config.to_dict(),
        "code_version": CODE_VERSION,
    }
    result = repo.commit(
        None,
        prewritten_shards=shard_refs,
        branch=branch,
        message=message or f"ingest {src.url}: {len(new)} object(s)",
        counts=counts,
        provenance=provenance,
        attachments={
            CONSUMED: canonical_json(consumed),
            REJECTS: canonical_json(rejects),
            DUPLICATES: canonical_json(duplicates),
            "dedup_index": index_bytes,
        },
        expected_parent=parent,
        allow_empty=True,
    )
    report.commit = result.commit_id
    report.shards_written = len(shard_refs)
    report.features = _write_features(repo, result.commit_id, scratch, progress)
    for info in list(repo.store.list(scratch)):
        repo.store.delete(info.key)
    report.message = f"committed {report.kept} new record(s) from {len(new)} object(s)"
    report.elapsed_s = round(time.monotonic() - started, 3)
    _log(progress, report.message)
    return report


def _write_features(repo: Repo, commit_id: str, scratch: str, progress: bool) -> str | None:
    """The commit landed: write its features table (parent's rows + the run's new records).

    A failure here does not undo the commit; `features publish` backfills a missing table.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dataversion.features import RECORD_FEATURES_SCHEMA

    from .features import write_commit_features

    try:
        parts = [
            pq.read_table(io.BytesIO(repo.store.get(info.key)))
            for info in sorted(repo.store.list(scratch + _FEATURES_SCRATCH), key=lambda i: i.key)
        ]
        new = pa.concat_tables(parts) if parts else RECORD_FEATURES_SCHEMA.empty_table()
        return write_commit_features(repo, commit_id, new)["key"]
    except (DataversionError, OSError, ValueError, pa.ArrowException) as e:
        _log(True, f"commit {commit_id[:12]} landed but its features table was not written: {e}")
        return None


def read_rejects(repo: Repo, ref: str) -> list[dict]:
    """The rejects stored with a commit: [{source, reason, message}], sorted by source."""
    data = repo.read_attachment(repo.resolve(ref), REJECTS)
    return json.loads(data) if data else []


def read_duplicates(repo: Repo, ref: str) -> list[dict]:
    """The duplicates an ingest commit recorded: [{source, record_id, duplicate_of, kind}]."""
    data = repo.read_attachment(repo.resolve(ref), DUPLICATES)
    return json.loads(data) if data else []
