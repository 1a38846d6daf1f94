"""The ingestion pipeline on a real Spark cluster (standalone master + one worker JVM on
loopback, through beam-pyspark-runner) gives the same commit content as the DirectRunner,
bit for bit: shards, record ids, duplicates, rejects, the dedup index and features."""

from __future__ import annotations

import random

import pytest
from pipeline_samples import png_bytes, words_doc
from test_ingest import sample_tree, write_tree

from dataversion import Repo
from pipelines.config import IngestConfig
from pipelines.ingest import run_ingest
from pipelines.results import CONSUMED, DEDUP_STATE, DUPLICATES, REJECTS

SPARK = ["--runner=beam_pyspark_runner.pyspark_runner.PySparkRunner"]

pytestmark = pytest.mark.slow


def _content(repo: Repo, report) -> dict:
    commit = report.commit
    c = repo.read_commit(commit)
    return {
        "packing": repo.packing_id_of(commit),
        "shards": [s.id for s in repo.shard_table(repo.read_packing(commit))],
        "ids": repo.record_ids(commit)._base.tobytes(),
        "counts": c.counts,
        **{
            name: repo.read_attachment(commit, name)
            for name in (CONSUMED, REJECTS, DUPLICATES, DEDUP_STATE)
        },
        "features": _features(repo, report.features),
    }


def _features(repo: Repo, key: str | None):
    import io

    import pyarrow.parquet as pq

    assert key
    # the commit id and its time differ between the two repositories; the rest must not
    return pq.read_table(io.BytesIO(repo.store.get(key))).drop_columns(
        ["dataset_commit", "event_timestamp"]
    )


def test_spark_cluster_ingest_equals_direct_runner(spark_cluster, tmp_path, vocab, monkeypatch):
    for k, v in spark_cluster.env(cores=2).items():
        monkeypatch.setenv(k, v)
    raw = tmp_path / "raw"
    tree = sample_tree(vocab)
    write_tree(raw, tree)
    # several id ranges and shards; 3 rounds of label propagation keep the graph (and the
    # test) short: every GroupByKey is a Spark stage
    cfg = IngestConfig.from_dict({"target_shard_bytes": 20_000, "dedup": {"max_rounds": 3}})
    urls = {name: "file://" + str(tmp_path / name) for name in ("direct", "spark")}
    # run 1 (DirectRunner) builds the same branch in both repositories; run 2, against
    # that branch (every step: exact, buckets with the branch's members, verify, rounds,
    # join), runs once on each runner: one Spark run keeps the test short
    first = {name: run_ingest(str(raw), url, config=cfg) for name, url in urls.items()}
    assert first["spark"].duplicates >= 2 and first["spark"].rejected >= 3
    # a second run against the branch: copies and near copies of its records, new texts
    rng = random.Random(4)
    more = {f"more/{i}.txt": words_doc(rng, vocab, 80) for i in range(12)}
    more["more/copy_of_a.txt"] = tree["docs/a.txt"]
    more["more/near_a.txt"] = tree["docs/a.txt"].replace(tree["docs/a.txt"].split()[9], "other", 1)
    more["more/cat_small.jpg"] = png_bytes(40, 40, seed=1, fmt="JPEG", quality=80)  # near image
    write_tree(raw, more)
    second = {
        "direct": run_ingest(str(raw), urls["direct"], config=cfg),
        "spark": run_ingest(str(raw), urls["spark"], config=cfg, beam_args=SPARK),
    }
    assert second["spark"].duplicate_kinds == {"exact": 1, "near": 2}
    for runs in (first, second):
        got = {}
        for name, report in runs.items():
            repo = Repo.open(urls[name])
            got[name] = _content(repo, report)
            got[name]["report"] = {
                k: v
                for k, v in report.to_dict().items()
                if k not in ("commit", "parent", "elapsed_s", "features")
            }
        assert got["spark"] == got["direct"]
