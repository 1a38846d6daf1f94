"""The packing adapter: lookups by id skip deleted rows and read through the verified path."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataversion import Repo
from dataversion.errors import CorruptObjectError
from dataversion.interop.snapshot import SnapshotView
from dataversion.records import make_text_records
from dataversion.shards import shard_key


def test_find_records_reads_live_rows_only_and_checks_bytes(tmp_path):
    repo = Repo.init(f"file://{tmp_path}/repo")
    texts = [f"record {i} " * 20 for i in range(10_000)]  # several row groups
    repo.commit(make_text_records(texts, sources=[f"s/{i}" for i in range(10_000)]))
    ls = sorted(repo.ls("main"), key=lambda r: r["record_id"])
    gone, kept = ls[5000], ls[9000]
    repo.rm(ids=[gone["record_id"]])
    view = SnapshotView(repo, repo.resolve("main"))
    found = view.find_records([gone["record_id"], kept["record_id"], "ab" * 16, "short"], ["source", "text"])
    assert set(found) == {kept["record_id"]}
    assert found[kept["record_id"]]["source"] == kept["source"]
    assert found[kept["record_id"]]["text"] == texts[int(kept["source"][2:])]
    shard = view.parts[0].group.shard
    path = Path(repo.store.local_path(shard_key(shard)))
    data = bytearray(path.read_bytes())
    data[-100] ^= 1
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptObjectError):
        SnapshotView(repo, repo.resolve("main")).find_records([kept["record_id"]], ["text"])


def test_find_records_never_returns_an_erased_record(tmp_path):
    repo = Repo.init(f"file://{tmp_path}/repo")
    repo.commit(make_text_records([f"text {i}" for i in range(50)], sources=[f"s/{i}" for i in range(50)]))
    ids = sorted(r["record_id"] for r in repo.ls("main"))
    repo.erase([ids[7]], reason="deletion request")
    found = SnapshotView(repo, repo.resolve("main")).find_records(ids[5:10], ["text"])
    assert set(found) == set(ids[5:10]) - {ids[7]}
