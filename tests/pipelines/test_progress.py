"""Progress while the pipeline runs (issue 18, item 6)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from dataversion.stores.memory import MemoryStore
from pipelines.cli.ingest import ingest_command
from pipelines.ingest import run_ingest
from pipelines.progress import RunProgress, progress_mode
from pipelines.scratch import RunScratch


def test_counts_markers_decision_and_shards():
    store = MemoryStore()
    scratch = RunScratch.new()
    progress = RunProgress(store, scratch, total=10, mode="off")
    store.put(
        scratch.progress + "a.json", b'{"objects": 4, "inputs": 6, "rejected": 1, "candidates": 5}'
    )
    progress.poll()
    progress.poll()  # a marker counts once
    c = progress.counts
    assert (c.objects, c.inputs, c.rejected, c.candidates, c.duplicates) == (4, 6, 1, 5, None)
    store.put(
        scratch.progress + "b.json", b'{"objects": 6, "inputs": 6, "rejected": 0, "candidates": 6}'
    )
    store.put(scratch.decision, json.dumps({"duplicates": [{}, {}], "kept": 9}).encode())
    store.put(scratch.shards, b"[]")
    progress.poll()
    assert c.line(10) == (
        "read 10/10 objects, 12 inputs: 11 passed the filters, 1 rejected; "
        "deduplicated: 9 kept, 2 duplicates; shards written"
    )


def test_mode():
    assert progress_mode(False) == "off" and progress_mode("bar") == "bar"
    assert progress_mode(True) == "log"  # stderr is not a terminal under pytest


def _raw(tmp_path, n=12):
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(n):
        (raw / f"{i:02d}.txt").write_text(f"document number {i} " * 20)
    (raw / "dup.txt").write_text("document number 3 " * 20)
    (raw / "empty.txt").write_text("")
    return raw


def test_ingest_reports_read_processed_deduplicated(tmp_path, capfd):
    raw = _raw(tmp_path)
    report = run_ingest(str(raw), f"file://{tmp_path}/repo", progress="log")
    err = capfd.readouterr().err
    assert report.duplicates == 1 and report.rejected == 1
    assert (
        "[ingest] read 14/14 objects, 14 inputs: 13 passed the filters, 1 rejected; "
        "deduplicated: 12 kept, 1 duplicates; shards written"
    ) in err


def test_markers_are_scratch_and_gone_after_the_commit(tmp_path):
    from dataversion import Repo

    raw = _raw(tmp_path, 3)
    run_ingest(str(raw), f"file://{tmp_path}/repo", progress="log")
    assert list(Repo.open(f"file://{tmp_path}/repo").store.list("tmp/")) == []


def test_ingest_json_is_one_object_with_progress_on(tmp_path):
    raw = _raw(tmp_path, 3)
    res = CliRunner().invoke(
        ingest_command, [str(raw), "--repo", f"file://{tmp_path}/repo", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["kept"] == 4  # stdout: the JSON object alone
    assert "[ingest] read 5/5 objects" in res.stderr
