"""The shape of the ingestion pipeline (any Beam runner); the steps live beside their kin:

    ListedObjects -> Spread -> BatchObjects -> ReadAndProcess --candidates--> DedupKeys
        -> GatherDedupKeys -> DecideDuplicates (global: exact ids, MinHash LSH, pHash, parent)
    candidates + decision (side input) -> KeepRepresentatives -> GroupByIdRange
        -> WriteShards -> GatherShardRefs -> SaveShardRefs
    ReadAndProcess --audit--> GatherAudit -> SaveAudit

    readers/read.py     ReadAndProcess        dedup/steps.py   DecideDuplicates, KeepRepresentatives
    writers/shards.py   WriteShards           writers/scratch.py  SaveToStore

Results land in the repository store under the run's scratch prefix (`pipelines.scratch`).
Beam is imported when the pipeline is built, not when this module is.
"""

from __future__ import annotations

from .config import IngestConfig
from .process import WorkItem
from .scratch import RunScratch


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
    denied: bytes = b"",
):
    """Add the ingestion transforms to a `beam.Pipeline` (any runner).

    Results land in the repository store under `scratch` (audit.json, decision.json,
    index.npz, shards.json, features/) for `run_ingest` to check and commit. `denied`: the
    repository's denylist (16-byte ids, concatenated): that content is rejected `erased`.
    """
    import apache_beam as beam

    from .dedup.steps import DecideDuplicates, KeepRepresentatives, dedup_keys
    from .readers.read import AUDIT, ReadAndProcess
    from .writers.scratch import SaveToStore
    from .writers.shards import WriteShards

    keys = RunScratch(scratch)
    out = (
        pipeline
        | "ListedObjects"
        >> beam.Create([(w.key, w.etag, w.size, w.label, w.problem) for w in work])
        | "Spread" >> beam.Reshuffle()
        | "BatchObjects" >> beam.BatchElements(min_batch_size=1, max_batch_size=64)
        | "ReadAndProcess"
        >> beam.ParDo(
            ReadAndProcess(source_url, config, denied, repo_url=repo_url, progress=keys.progress)
        ).with_outputs(AUDIT, main="candidates")
    )
    candidates = out.candidates
    decision = (
        candidates
        | "DedupKeys" >> beam.Map(dedup_keys)
        | "GatherDedupKeys" >> beam.combiners.ToList()
        | "DecideDuplicates" >> beam.ParDo(DecideDuplicates(repo_url, parent, config))
    )
    _ = (
        decision
        | "SaveDecision" >> beam.Map(_decision_summary)
        | "WriteDecision" >> beam.ParDo(SaveToStore(repo_url, keys.decision))
    )
    _ = decision | "SaveIndex" >> beam.ParDo(SaveToStore(repo_url, keys.index, pick="index"))
    _ = (
        candidates
        | "KeepRepresentatives"
        >> beam.ParDo(KeepRepresentatives(partitions), beam.pvalue.AsSingleton(decision))
        | "GroupByIdRange" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(WriteShards(repo_url, config.target_shard_bytes, scratch))
        | "GatherShardRefs" >> beam.combiners.ToList()
        | "SaveShardRefs" >> beam.ParDo(SaveToStore(repo_url, keys.shards))
    )
    _ = (
        out[AUDIT]
        | "GatherAudit" >> beam.combiners.ToList()
        | "SaveAudit" >> beam.ParDo(SaveToStore(repo_url, keys.audit))
    )
    return pipeline


def _decision_summary(decision: dict) -> dict:
    return {"duplicates": decision["duplicates"], "kept": len(decision["kept_sources"])}
