"""The ingestion driver: raw objects -> cleaned, deduplicated records -> one commit.

`run_ingest` lists the source, drops objects the branch already consumed, runs the
pipeline (`pipelines.graph.build_pipeline`) on any Beam runner, checks
`inputs == kept + duplicates + rejected`, then commits the prewritten shards with
`expected_parent` (compare-and-swap) and writes the commit's features table. Workers hand
their small results back through the repository's store (`pipelines.scratch`), which every
runner can reach; a run killed before the commit leaves only unreferenced objects.

Shards are written per record-id range (the number of ranges depends on the input size
only), so the same input gives the same shards whatever the runner and worker count.
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass

from dataversion import Repo
from dataversion.errors import DataversionError, NotFoundError
from dataversion.hashing import canonical_json
from dataversion.objects import ShardRef

from .config import IngestConfig
from .graph import build_pipeline
from .process import WorkItem
from .readers.labels import LabelResolver
from .readers.source import open_source
from .results import (
    CODE_VERSION,
    CONSUMED,
    DEDUP_INDEX,
    DUPLICATES,
    REJECTS,
    IngestReport,
    read_consumed,
    read_duplicates,
    read_rejects,
)
from .scratch import RunScratch

__all__ = ["IngestReport", "build_pipeline", "read_duplicates", "read_rejects", "run_ingest"]


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
    consumed = read_consumed(repo, parent)
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
    scratch = RunScratch.new()
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
                scratch=scratch.prefix,
                partitions=partitions,
            )
        _log(progress, "pipeline done; checking the accounting")
        results = _read_results(repo, scratch)
    except NotFoundError as e:
        raise DataversionError(f"the pipeline did not produce its results ({e})") from e
    _fill_report(report, results)
    _check_accounting(report, results, listed=len(work))

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
        prewritten_shards=results.shard_refs,
        branch=branch,
        message=message or f"ingest {src.url}: {len(new)} object(s)",
        counts=counts,
        provenance=provenance,
        attachments={
            CONSUMED: canonical_json(consumed),
            REJECTS: canonical_json(results.rejects),
            DUPLICATES: canonical_json(results.duplicates),
            DEDUP_INDEX: results.index_bytes,
        },
        expected_parent=parent,
        allow_empty=True,
    )
    report.commit = result.commit_id
    report.shards_written = len(results.shard_refs)
    report.features = _write_features(repo, result.commit_id, scratch)
    for info in list(repo.store.list(scratch.prefix)):
        repo.store.delete(info.key)
    report.message = f"committed {report.kept} new record(s) from {len(new)} object(s)"
    report.elapsed_s = round(time.monotonic() - started, 3)
    _log(progress, report.message)
    return report


@dataclass
class _RunResults:
    """What the pipeline's workers left in the run's scratch area, in a stable order."""

    objects: int  # objects processed
    inputs: int
    kept: int
    rejects: list[dict]  # sorted by source
    duplicates: list[dict]  # sorted by source
    shard_refs: list[ShardRef]  # sorted by (min id, id)
    index_bytes: bytes


def _read_results(repo: Repo, scratch: RunScratch) -> _RunResults:
    """Raises NotFoundError if a result is missing (a step did not run)."""
    store = repo.store
    audit = json.loads(store.get(scratch.audit))
    decision = json.loads(store.get(scratch.decision))
    index_bytes = store.get(scratch.index)
    shard_dicts = json.loads(store.get(scratch.shards))
    return _RunResults(
        objects=sum(a["objects"] for a in audit),
        inputs=sum(a["inputs"] for a in audit),
        kept=decision["kept"],
        rejects=sorted((r for a in audit for r in a["rejects"]), key=lambda r: r["source"]),
        duplicates=sorted(decision["duplicates"], key=lambda r: r["source"]),
        shard_refs=sorted(
            (ShardRef.from_dict(d) for d in shard_dicts), key=lambda s: (s.min_id, s.id)
        ),
        index_bytes=index_bytes,
    )


def _fill_report(report: IngestReport, results: _RunResults) -> None:
    report.inputs = results.inputs
    report.rejected = len(results.rejects)
    report.duplicates = len(results.duplicates)
    report.kept = results.kept
    report.reasons = dict(sorted(Counter(r["reason"] for r in results.rejects).items()))
    report.duplicate_kinds = dict(sorted(Counter(d["kind"] for d in results.duplicates).items()))
    by_mod: Counter[str] = Counter()
    for s in results.shard_refs:
        by_mod.update(s.by_modality)
    report.by_modality = dict(sorted(by_mod.items()))


def _check_accounting(report: IngestReport, results: _RunResults, *, listed: int) -> None:
    """Every listed object processed, every input kept, a duplicate or rejected, every kept
    record written; else DataversionError (nothing is committed)."""
    written = sum(s.live_rows for s in results.shard_refs)
    if (
        results.objects != listed
        or report.inputs != report.kept + report.duplicates + report.rejected
        or written != report.kept
    ):
        raise DataversionError(
            f"ingest accounting does not balance: {listed} objects listed, {results.objects} processed; "
            f"inputs {report.inputs} != kept {report.kept} + duplicates {report.duplicates} + rejected {report.rejected}, "
            f"or {written} records written; nothing committed"
        )


def _write_features(repo: Repo, commit_id: str, scratch: RunScratch) -> str | None:
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
            for info in sorted(repo.store.list(scratch.features), key=lambda i: i.key)
        ]
        new = pa.concat_tables(parts) if parts else RECORD_FEATURES_SCHEMA.empty_table()
        return write_commit_features(repo, commit_id, new)["key"]
    except (DataversionError, OSError, ValueError, pa.ArrowException) as e:
        _log(True, f"commit {commit_id[:12]} landed but its features table was not written: {e}")
        return None


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[ingest] {msg}", file=sys.stderr, flush=True)


def _pipeline_options(beam_args):
    from apache_beam.options.pipeline_options import PipelineOptions

    args = list(beam_args)
    if not any(a.startswith("--runner") for a in args):
        args.append("--runner=DirectRunner")
    return PipelineOptions(args)
