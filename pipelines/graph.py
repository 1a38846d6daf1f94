"""The shape of the ingestion pipeline (any Beam runner, beam-pyspark-runner included):
dedup as sharded steps (datatrove's Signature -> Buckets -> Cluster -> Filter), no step
whose input is the whole run or the whole branch.

    ListingPieces (piece numbers; the pieces lie in the store) -> Spread (GroupByKey)
    -> ReadAndProcess: read, clean, MinHash / pHash, branch membership of the ids
         --payload--> by id range ----------------------------------------------+
         --rows-----> GroupRowsByIdRange -> DecideExact (equal ids)              |
                        --exact--> by id range -------------------------------+  |
                        --node---> by id range (joined below) ------+         |  |
                        --band---> GroupBandsByKeyRange -> BucketPairs        |  |
                                   -> [nodes + pairs] GroupByIdRangeA -> AttachA |
                                   -> [nodes + pairs] GroupByIdRangeB -> VerifyB |
                                   -> GroupEdges -> FirstLabels                  |
                                   -> max_rounds x (GroupRound -> Propagate)     |
                                   -> GroupSettle -> Settle (fails if unsettled) |
                                   -> [nodes + members] GroupByRep -> FinalSimilarity
                                         --near--> by id range ---------------+  |
    [payload + exact + near] JoinByIdRange -> WriteRange (kept records -> shards) <-+
        -> GroupBandsOfKept -> WriteBandParts (the run's part of the branch's dedup state)

    readers/read.py  ReadAndProcess     dedup/steps.py  DecideExact ... FinalSimilarity
    writers/shards.py  WriteRange, WriteBandParts      dedup/sharded.py  the functions
    dedup/state.py  the branch's dedup state (runs of content-addressed parts)

Only Create, ParDo, Flatten and GroupByKey are used (no Reshuffle, BatchElements, tagged
outputs, side inputs or combiners): beam-pyspark-runner translates exactly those.
Results land in the repository store under the run's scratch prefix (`pipelines.scratch`).
Beam is imported when the pipeline is built, not when this module is.
"""

from __future__ import annotations

from .config import IngestConfig


def build_pipeline(
    pipeline,
    *,
    source_url: str,
    repo_url: str,
    pieces: int,
    config: IngestConfig,
    parent: str | None,
    scratch: str,
    partitions: int,
    denied: bytes = b"",
):
    """Add the ingestion transforms to a `beam.Pipeline` (any runner).

    `denied`: the repository's denylist (16-byte ids, concatenated): that content is
    rejected `erased`. `pieces`: how many listing pieces the driver wrote under `scratch`; `partitions`: id
    ranges (and band-key ranges) the run is split into. Results land in the repository
    store under `scratch` (audit/, parts/, features/, index/) for `run_ingest` to commit.
    """
    import apache_beam as beam

    from .dedup.steps import (
        AttachA,
        BucketPairs,
        DecideExact,
        FinalSimilarity,
        FirstLabels,
        Propagate,
        VerifyB,
        as_tag,
        tagged,
    )
    from .readers.read import ReadAndProcess
    from .scratch import RunScratch
    from .writers.shards import WriteBandParts, WriteRange

    parts = partitions
    read = (
        pipeline
        | "ListingPieces" >> beam.Create([(i, i) for i in range(pieces)])
        | "Spread" >> beam.GroupByKey()
        | "Pieces" >> beam.FlatMap(lambda kv: kv[1])
        | "ReadAndProcess"
        >> beam.ParDo(
            ReadAndProcess(
                source_url, repo_url, config, parent, scratch, parts, denied,
                progress=RunScratch(scratch).progress,
            )
        )
    )
    payload = (
        read
        | "Payloads" >> beam.FlatMap(tagged("payload"))
        | "TagPayload" >> beam.Map(as_tag("payload"))
    )
    exact = (
        read
        | "Rows" >> beam.FlatMap(tagged("rows"))
        | "GroupRowsByIdRange" >> beam.GroupByKey()
        | "DecideExact" >> beam.ParDo(DecideExact(config, parts))
    )
    exact_dups = (
        exact
        | "ExactDups" >> beam.FlatMap(tagged("exact"))
        | "TagExact" >> beam.Map(as_tag("exact"))
    )
    nodes = exact | "Nodes" >> beam.FlatMap(tagged("node")) | "TagNode" >> beam.Map(as_tag("node"))
    pairs = (
        exact
        | "Bands" >> beam.FlatMap(tagged("band"))
        | "GroupBandsByKeyRange" >> beam.GroupByKey()
        | "BucketPairs" >> beam.ParDo(BucketPairs(repo_url, parent, config, parts, scratch))
        | "TagPair" >> beam.Map(as_tag("pair"))
    )
    attached = (
        (nodes, pairs)
        | "NodesAndPairs" >> beam.Flatten()
        | "GroupByIdRangeA" >> beam.GroupByKey()
        | "AttachA" >> beam.ParDo(AttachA(parts))
        | "TagAttached" >> beam.Map(as_tag("att"))
    )
    state = (
        (nodes, attached)
        | "NodesAndAttached" >> beam.Flatten()
        | "GroupByIdRangeB" >> beam.GroupByKey()
        | "VerifyB" >> beam.ParDo(VerifyB(repo_url, parent, config, parts, scratch))
        | "GroupEdges" >> beam.GroupByKey()
        | "FirstLabels" >> beam.ParDo(FirstLabels(parts))
    )
    for r in range(config.dedup.max_rounds):
        state = (
            state
            | f"GroupRound{r + 1}" >> beam.GroupByKey()
            | f"Propagate{r + 1}" >> beam.ParDo(Propagate(parts))
        )
    members = (
        state
        | "GroupSettle" >> beam.GroupByKey()
        | "Settle" >> beam.ParDo(Propagate(parts, last=True))
    )
    near = (
        (nodes, members)
        | "NodesAndMembers" >> beam.Flatten()
        | "GroupByRep" >> beam.GroupByKey()
        | "FinalSimilarity" >> beam.ParDo(FinalSimilarity(repo_url, parent, config, parts, scratch))
    )
    _ = (
        (payload, exact_dups, near)
        | "PayloadsAndDecisions" >> beam.Flatten()
        | "JoinByIdRange" >> beam.GroupByKey()
        | "WriteRange" >> beam.ParDo(WriteRange(repo_url, scratch, config, parts))
        | "GroupBandsOfKept" >> beam.GroupByKey()
        | "WriteBandParts" >> beam.ParDo(WriteBandParts(repo_url, scratch, parts))
    )
    return pipeline
