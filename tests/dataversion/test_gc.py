"""gc never deletes what a root reaches, refuses when it cannot tell, and keeps what a writer
in flight writes or reuses (file:// and the real S3 server)."""

from __future__ import annotations

import json
import os
import time

import pytest

from dataversion import Repo
from dataversion.errors import CorruptObjectError
from dataversion.inflight import InFlight
from dataversion.objectdb import commit_key
from dataversion.packing import packing_key
from dataversion.records import make_text_records
from dataversion.shards import shard_key
from dataversion.tree import node_key

DAY = 86400.0


@pytest.fixture
def repo(repo_url):
    repo = Repo.init(repo_url)
    repo.commit(make_text_records([f"first {i}" for i in range(10)]), message="one")
    repo.commit(make_text_records([f"second {i}" for i in range(10)]), message="two")
    return repo


def _keys(repo) -> set[str]:
    return {i.key for i in repo.store.list("")}


def _gc_all(repo):
    return repo.gc(grace_seconds=0, expire_reflog_seconds=0)


def _damage(repo, key, change):
    repo.store.put(key, change(repo.store.get(key)))


def _age(repo, key, seconds):
    path = repo.store.local_path(key)
    t = time.time() - seconds
    os.utime(path, (t, t))


@pytest.mark.parametrize("where", ["tip commit", "parent commit", "packing", "tree node"])
def test_a_corrupt_object_on_a_root_path_stops_gc_with_nothing_deleted(repo, where):
    tip = repo.resolve("main")
    key = {"tip commit": commit_key(tip), "parent commit": commit_key(repo.resolve("main~1")),
           "packing": packing_key(repo.packing_id_of(tip)), "tree node": node_key(repo.root_of(tip))}[where]
    if where in ("packing", "tree node"):
        _damage(repo, key, lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:])
    else:
        _damage(repo, key, lambda b: b[:-5])
    before = _keys(repo)
    with pytest.raises(CorruptObjectError, match="nothing deleted"):
        _gc_all(Repo.open(repo.url))
    assert _keys(repo) == before


def test_a_missing_commit_stops_gc(repo):
    repo.store.delete(commit_key(repo.resolve("main~1")))
    before = _keys(repo)
    with pytest.raises(CorruptObjectError, match="nothing deleted"):
        _gc_all(Repo.open(repo.url))
    assert _keys(repo) == before


@pytest.mark.parametrize("prefix", ["pins/", "reflog/"])
def test_an_unreadable_pin_or_reflog_entry_stops_gc(repo, prefix):
    if prefix == "pins/":
        repo.store.put("pins/broken.json", b"{not json")
    else:
        key = next(i.key for i in repo.store.list("reflog/"))
        repo.store.put(key, b"\x00garbage")
    before = _keys(repo)
    with pytest.raises(CorruptObjectError, match="nothing deleted"):
        repo.gc(grace_seconds=0)  # reflog entries are not expired: they are roots
    assert _keys(repo) == before


def test_the_cli_says_exit_5_and_names_the_object(repo):
    from click.testing import CliRunner

    from dataversion.cli import main

    tip = repo.resolve("main")
    _damage(repo, commit_key(tip), lambda b: b[:-5])
    r = CliRunner().invoke(main, ["gc", "--grace", "0s", "--expire-reflog", "0s", "--repo", repo.url])
    assert r.exit_code == 5 and tip in r.output and "nothing deleted" in r.output


def test_a_commit_in_flight_keeps_the_objects_it_reuses(repo_url):
    """The race: gc marks while a writer has reused an unreachable, old shard and has not
    yet moved its ref. Freshening plus the in-flight marker keep the shard."""
    repo = Repo.init(repo_url)
    texts = [f"reused {i}" for i in range(10)]
    first = repo.commit(make_text_records(texts), branch="side", message="one").commit_id
    repo.delete_branch("side")
    shard = repo.shard_table(repo.read_packing(first))[0]
    if repo.store.local_path(shard_key(shard.id)):
        _age(repo, shard_key(shard.id), DAY)  # old enough for any grace
    writer = Repo.open(repo_url)
    real_cas = writer.refs.set_if_equals

    def gc_then_cas(*args, **kwargs):
        # the writer has stored (or reused) everything; a gc runs before the ref moves
        Repo.open(repo_url).gc(grace_seconds=3600, expire_reflog_seconds=0)
        return real_cas(*args, **kwargs)

    writer.refs.set_if_equals = gc_then_cas
    res = writer.commit(make_text_records(texts), branch="main", message="again")
    assert repo.shard_table(repo.read_packing(res.commit_id))[0].id == shard.id  # reused, not rewritten
    assert repo.store.exists(shard_key(shard.id))
    assert Repo.open(repo_url).verify()["ok"]


def test_an_old_reused_object_is_freshened(tmp_path):
    repo = Repo.init(f"file://{tmp_path}/r")
    texts = [f"fresh {i}" for i in range(5)]
    first = repo.commit(make_text_records(texts), branch="side", message="one").commit_id
    key = shard_key(repo.shard_table(repo.read_packing(first))[0].id)
    _age(repo, key, DAY)
    repo.delete_branch("side")
    repo.commit(make_text_records(texts), branch="main", message="again")
    assert os.stat(repo.store.local_path(key)).st_mtime > time.time() - 600


def test_a_live_run_protects_its_scratch_and_a_dead_one_does_not(repo, monkeypatch):
    scratch = "tmp/ingest/run-1/"
    repo.store.put(scratch + "part-000.parquet", b"partial results")
    with InFlight(repo.store, "ingest", scratch=scratch):
        d = repo.gc(grace_seconds=0, expire_reflog_seconds=0)
        assert scratch + "part-000.parquet" not in d["objects"] and d["in_flight"] == 1
        assert repo.store.exists(scratch + "part-000.parquet")
    # a marker whose heartbeat stopped long ago protects nothing
    repo.store.put("inflight/0000-dead.json", json.dumps({"started": 0, "heartbeat": 0, "what": "x", "scratch": scratch}).encode())
    monkeypatch.setenv("DATAVERSION_INFLIGHT_TTL", "0")
    d = repo.gc(grace_seconds=0, expire_reflog_seconds=0)
    assert scratch + "part-000.parquet" in d["objects"]
    assert repo.verify()["ok"]


def test_gc_default_grace_is_two_weeks(repo):
    repo.delete_branch("main")
    d = repo.gc(expire_reflog_seconds=0)
    assert d["deleted"] == 0 and d["kept_young"] > 0
