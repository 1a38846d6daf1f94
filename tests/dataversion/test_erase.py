"""Erasure (`dataversion erase`): the payload leaves every version, the record keeps its
place, the content stays out, and the report names the commits and checkpoints.

Black-box through the CLI and the Repo API; file:// and S3 (the `repo_url` fixture)."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from dataversion import Repo
from dataversion.cli import main
from dataversion.records import text_record_ids

SECRET = "Jane Roe, 12 Example Street, phone 555-0100: this sentence must disappear everywhere."
SECRET_ID = text_record_ids(pa.array([SECRET], pa.large_string()))[0].hex()
OTHER_TEXTS = [f"ordinary text number {i}, nothing personal in it at all" for i in range(40)]


def _cli(repo_url: str):
    runner = CliRunner()

    def run(*args, code=0):
        result = runner.invoke(main, [str(a) for a in args] + ["--repo", repo_url], catch_exceptions=False)
        assert result.exit_code == code, (args, result.output)
        return result

    return run


def _json(result):
    return json.loads(result.output)


@pytest.fixture
def history(repo_url, tmp_path):
    """A repository whose record SECRET is held by several commits of two branches and a tag:
    commit 1 adds it with 20 others, commit 2 adds 10 more, a branch adds 10 more, main gets
    a JSONL commit (SECRET again as a line elsewhere is the same record), and one commit
    after SECRET was removed (it stays in history)."""
    Repo.init(repo_url)
    run = _cli(repo_url)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "secret.txt").write_text(SECRET)
    for i, t in enumerate(OTHER_TEXTS[:20]):
        (raw / f"t{i:02d}.txt").write_text(t)
    run("add", raw, "-m", "one")
    for i, t in enumerate(OTHER_TEXTS[20:30]):
        (raw / f"u{i:02d}.txt").write_text(t)
    run("add", raw, "-m", "two")
    run("tag", "v1")
    run("branch", "side")
    side = tmp_path / "side"
    side.mkdir()
    for i, t in enumerate(OTHER_TEXTS[30:40]):
        (side / f"s{i:02d}.txt").write_text(t)
    run("add", side, "-b", "side", "-m", "side")
    (raw / "more.bin").write_bytes(b"\x00binary payload that stays\xff" * 10)
    run("add", raw, "-m", "three")
    return {"run": run, "raw": raw, "url": repo_url}


def _state(repo: Repo) -> dict:
    """Everything that must not change: refs, log, diff counts of every commit pair."""
    refs = repo.refs.list()
    logs = {name: [c["id"] for c in repo.log(name)] for name in ("main", "side")}
    diffs = {}
    for name in ("main", "side"):
        ids = logs[name]
        for a, b in zip(ids[1:], ids):
            d = repo.diff(a, b)
            diffs[(a, b)] = (d["added"], d["removed"], d["by_modality"])
    return {"refs": refs, "logs": logs, "diffs": diffs}


def _all_ids(repo: Repo, ref: str) -> list[str]:
    return [r["record_id"] for r in repo.ls(ref)]


def test_erase_by_id_keeps_every_version_readable_and_commit_ids(history, tmp_path):
    run, url = history["run"], history["url"]
    repo = Repo.open(url)
    before = _state(repo)
    commits_with = [c for c in before["logs"]["main"] + before["logs"]["side"] if SECRET_ID in _all_ids(repo, c)]
    assert len(set(commits_with)) >= 3
    other_ids = {c: [i for i in _all_ids(repo, c) if i != SECRET_ID] for c in set(commits_with)}

    report = _json(run("erase", SECRET_ID, "--reason", "GDPR request #17", "--json"))
    assert report["state"] == "done"
    assert report["records"] == [SECRET_ID]
    assert set(report["commits"]) == set(commits_with)
    assert report["shards_rewritten"] >= 1 and report["bytes_written"] > 0

    repo = Repo.open(url)
    assert _state(repo) == before  # commit ids, refs, log, diff counts
    for c in set(commits_with):
        assert _all_ids(repo, c) == other_ids[c]  # readers skip it, the rest in the same order
    for k, c in enumerate(sorted(set(before["logs"]["main"] + before["logs"]["side"]))):  # every version reads
        d = repo.checkout(c, str(tmp_path / f"v{k}"))
        files = [p for p in (tmp_path / f"v{k}").rglob("*") if p.is_file()]
        assert d["files"] == len(files) == len(_all_ids(repo, c))
        assert all(SECRET.encode() not in p.read_bytes() for p in files)
    assert _json(run("verify", "--all", "--json"))["ok"]
    out = tmp_path / "co"
    run("checkout", "main", out)
    assert SECRET not in "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    assert (out / "t00.txt").read_text() == OTHER_TEXTS[0]
    # the durable record
    listed = _json(run("erasures", "--json"))
    assert [e["id"] for e in listed] == [report["erasure"]]
    assert listed[0]["reason"] == "GDPR request #17" and listed[0]["state"] == "done"
    assert "erased" in run("erasures").output or "done" in run("erasures").output


def _payload_hits(store, needle: bytes) -> list[str]:
    """Keys of every object that contains `needle`, looking inside Parquet (decoded), zstd,
    gzip and zip (npz) objects too."""
    import zstandard

    hits = []
    for info in store.list(""):
        data = store.get(info.key)
        if _contains(data, needle, zstandard):
            hits.append(info.key)
    return hits


def _contains(data: bytes, needle: bytes, zstandard, depth: int = 0) -> bool:
    if needle in data:
        return True
    if depth > 2:
        return False
    if data[:4] == b"PAR1":
        try:
            table = pq.read_table(pa.BufferReader(data))
        except pa.ArrowException:
            return False
        for col in table.columns:
            for v in col.to_pylist():
                if isinstance(v, str) and needle.decode("utf-8", "ignore") in v:
                    return True
                if isinstance(v, bytes) and needle in v:
                    return True
        return False
    if data[:4] == b"\x28\xb5\x2f\xfd":
        try:
            return _contains(zstandard.ZstdDecompressor().decompressobj().decompress(data), needle, zstandard, depth + 1)
        except zstandard.ZstdError:
            return False
    if data[:2] == b"\x1f\x8b":
        try:
            return _contains(gzip.decompress(data), needle, zstandard, depth + 1)
        except OSError:
            return False
    if data[:2] == b"PK":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                return any(_contains(z.read(n), needle, zstandard, depth + 1) for n in z.namelist())
        except zipfile.BadZipFile:
            return False
    return False


def test_after_gc_no_object_holds_the_payload(history):
    run, url = history["run"], history["url"]
    repo = Repo.open(url)
    needle = SECRET.encode()
    assert _payload_hits(repo.store, needle)  # the scan finds it before (inside snappy Parquet)
    run("erase", SECRET_ID, "--reason", "request", "--json")
    run("gc", "--json")  # default grace: the replaced objects go whatever their age
    assert _payload_hits(Repo.open(url).store, needle) == []
    assert _json(run("verify", "--all", "--json"))["ok"]
    assert len(_all_ids(Repo.open(url), "v1")) == 30


def test_erase_by_source_prefix_and_re_add_is_rejected_erased(history):
    run, url, raw = history["run"], history["url"], history["raw"]
    report = _json(run("erase", "--source", "secret", "--reason", "takedown", "--json"))
    assert report["records"] == [SECRET_ID]
    assert report["sources"] == ["secret"]
    # the same content again, under another name: rejected, counted
    (raw / "copy-of-secret.txt").write_text(SECRET)
    result = _json(run("add", raw, "-m", "again", "--json"))
    reasons = {s["source"]: s["reason"] for s in result["skipped"]}
    assert reasons["copy-of-secret.txt"] == "erased"
    assert SECRET_ID not in _all_ids(Repo.open(url), "main")
    # the denylist holds the digest, never the content
    repo = Repo.open(url)
    keys = [i.key for i in repo.store.list("denylist/")]
    # the record's id, and the id of the text as ingest would store it (cleaned)
    from dataversion.denylist import alias_ids

    assert keys == sorted(f"denylist/{h}" for h in {SECRET_ID, *(a.hex() for a in alias_ids([SECRET], repo.id_hash))})
    assert all(SECRET.encode() not in repo.store.get(k) for k in keys)
    assert "no record" in _cli(url)("erase", "--source", "no-such-prefix", "--reason", "x", code=3).output


def test_direct_commit_of_erased_content_is_skipped(history):
    from dataversion.records import make_text_records

    repo = Repo.open(history["url"])
    repo.erase([SECRET_ID], reason="r")
    res = repo.commit(make_text_records([SECRET, "a brand new text"], sources=["x", "y"]), message="api")
    assert res.added == 1
    assert [s["reason"] for s in res.skipped] == ["erased"]


def test_pinned_checkpoint_resumes_with_the_other_records_in_identical_order(history, tmp_path):
    from dataversion.torch import SnapshotLoader
    from dataversion.training.lineage import record_checkpoint

    url = history["url"]
    repo = Repo.open(url)
    commit = repo.resolve("main")
    kw = dict(batch_size=4, shuffle=True, seed=7, window=8, cache="none")
    full = [rid for b in SnapshotLoader(url, commit, **kw) for rid in b["record_id"]]
    assert SECRET_ID in full
    loader = SnapshotLoader(url, commit, **kw)
    it = iter(loader)
    seen_before = [rid for _ in range(3) for rid in next(it)["record_id"]]
    state = loader.state_dict()
    saw = SECRET_ID in seen_before
    record_checkpoint(repo, state, checkpoint=str(tmp_path / "ckpt.pt"), run="train", step=3)
    other = SnapshotLoader(url, commit, **kw).state_dict()
    record_checkpoint(repo, {**other, "position": 0}, checkpoint=str(tmp_path / "zero.pt"), run="fresh", step=0)
    record_checkpoint(repo, {**other, "position": len(full)}, checkpoint=str(tmp_path / "all.pt"), run="full", step=9)

    report = repo.erase([SECRET_ID], reason="poisoned sample")
    assert sorted(c["run"] for c in report["checkpoints"]) == sorted(["full"] + (["train"] if saw else []))
    assert all(c["saw"] == [SECRET_ID] for c in report["checkpoints"])

    after = [rid for b in SnapshotLoader(url, commit, **kw) for rid in b["record_id"]]
    assert after == [r for r in full if r != SECRET_ID]
    resumed = SnapshotLoader(url, commit, **kw)
    resumed.load_state_dict(state)
    rest = [rid for b in resumed for rid in b["record_id"]]
    assert rest == [r for r in full[len(seen_before):] if r != SECRET_ID]
    # lineage still answers for the erased record
    out = json.loads(_cli(url)("lineage", "--record", SECRET_ID, "--json").output)
    assert "full" in json.dumps(out) and ("train" in json.dumps(out)) == saw
    listed = _json(_cli(url)("erasures", "--json"))
    assert sorted(c["run"] for c in listed[0]["checkpoints"]) == sorted(c["run"] for c in report["checkpoints"])


def test_sigkill_mid_erase_then_rerun_finishes(history, tmp_path):
    """A child process erases with a hook that SIGKILLs it right after its first commit
    re-point; the repository is valid meanwhile and a rerun finishes."""
    url = history["url"]
    script = tmp_path / "kill.py"
    script.write_text(
        "import os, signal, sys\n"
        "from dataversion import Repo\n"
        "import dataversion.porcelain.erase as e\n"
        "orig = e._rewrite_packing\n"
        "def killing(*a, **k):\n"
        "    out = orig(*a, **k)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "e._rewrite_packing = killing\n"
        f"Repo.open({url!r}).erase([{SECRET_ID!r}], reason='killed')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    run = _cli(url)
    records = _json(run("erasures", "--json"))
    assert [r["state"] for r in records] == ["intent"]
    assert _json(run("verify", "--all", "--json"))["ok"]  # valid mid-way
    report = _json(run("erase", SECRET_ID, "--reason", "killed", "--json"))
    assert report["state"] == "done"
    run("gc", "--json")
    assert _payload_hits(Repo.open(url).store, SECRET.encode()) == []
    assert _json(run("verify", "--all", "--json"))["ok"]


def test_an_erasure_racing_a_commit_on_the_same_branch_loses_neither(history):
    """A commit that built on the tip before the erasure re-pointed it lands after: the
    writer's own check erases the record from its commit too, and its records stay."""
    from dataversion.records import make_text_records

    url = history["url"]
    writer = Repo.open(url)
    parent_manifest_read = threading.Event()
    erased = threading.Event()
    orig = writer.read_packing  # the writer reads its parent's packing, then builds on it

    def slow_read_manifest(cid):
        m = orig(cid)
        if not parent_manifest_read.is_set():
            parent_manifest_read.set()
            assert erased.wait(120)
        return m

    writer.read_packing = slow_read_manifest
    result = {}

    def commit():
        result["r"] = writer.commit(make_text_records(["a record committed during the erasure"], sources=["race.txt"]),
                                    message="racing")

    t = threading.Thread(target=commit)
    t.start()
    assert parent_manifest_read.wait(120)
    Repo.open(url).erase([SECRET_ID], reason="race")
    erased.set()
    t.join(120)
    assert result["r"].added == 1
    repo = Repo.open(url)
    ids = _all_ids(repo, "main")
    assert SECRET_ID not in ids and len(ids) == 32
    assert repo.log("main")[0]["message"] == "racing"
    assert _json(_cli(url)("verify", "--all", "--json"))["ok"]
    _cli(url)("gc", "--json")
    assert _payload_hits(Repo.open(url).store, SECRET.encode()) == []


def test_cache_purge_drops_replaced_shards(history, tmp_path):
    url = history["url"]
    run = _cli(url)
    cache_dir = tmp_path / "cache"
    run("cache", "warm", "main", "--cache-dir", cache_dir)
    cached_before = {p.name for p in cache_dir.rglob("*.parquet")}
    run("erase", SECRET_ID, "--reason", "r")
    out = _json(run("cache", "purge", "--cache-dir", cache_dir, "--json"))
    assert out["replaced_shards"] >= 1
    if url.startswith("file://"):
        assert not cached_before and out["purged"] == 0  # a local repository is read in place
    else:
        assert out["purged"] >= 1
        cached_after = {p.name for p in cache_dir.rglob("*.parquet")}
        assert cached_after < cached_before
    for p in cache_dir.rglob("*.parquet"):
        assert SECRET.encode() not in p.read_bytes() and not _contains(p.read_bytes(), SECRET.encode(), __import__("zstandard"))
    # warm fetches the new shards and drops entries no erasure left reachable
    run("cache", "warm", "main", "--cache-dir", cache_dir)
    assert not any(_contains(p.read_bytes(), SECRET.encode(), __import__("zstandard")) for p in cache_dir.rglob("*") if p.is_file())


def test_repository_erase_record_is_plain_json(history):
    repo = Repo.open(history["url"])
    report = repo.erase([SECRET_ID], reason="r")
    raw = repo.store.get(f"erasures/{report['erasure']}.json")
    assert SECRET.encode() not in raw
    assert json.loads(raw)["records"] == [SECRET_ID]


@pytest.mark.parametrize("n", [1])
def test_erase_needs_a_reason_and_a_target(history, n):
    run = _cli(history["url"])
    assert "reason" in run("erase", SECRET_ID, code=2).output
    assert "nothing to erase" in run("erase", "--reason", "x", code=2).output


def test_path_sanity():
    assert Path(__file__).name == "test_erase.py"


def test_dv_filesystem_serves_no_erased_record(history):
    fsspec = pytest.importorskip("fsspec")
    import dataversion.interop.fsspec  # noqa: F401 - registers dv://

    url = history["url"]
    Repo.open(url).erase([SECRET_ID], reason="r")
    fs = fsspec.filesystem("dv", repo=url)
    parts = [p for p in fs.ls("v1", detail=False) if p.endswith(".parquet")]
    ids, texts = [], []
    for p in parts:
        with fs.open(p) as f:
            t = pq.read_table(f)
        ids += [r.hex() for r in t.column("record_id").to_pylist()]
        texts += [x for x in t.column("text").to_pylist() if x]
    assert SECRET_ID not in ids and len(ids) == 30
    assert SECRET not in texts


def test_a_writer_killed_before_its_own_erasure_check_is_found_and_finished(history, monkeypatch):
    """Shards written before the erasure (a distributed ingest's) committed after it, by a
    writer that died before its check: verify names the leak, `erase --resume` erases it."""
    import dataversion.writer as writer
    from dataversion.records import make_text_records

    url = history["url"]
    repo = Repo.open(url)
    prewritten = repo.write_shards(make_text_records([SECRET, "another fresh record"], sources=["late/a", "late/b"]))
    repo.erase([SECRET_ID], reason="r")
    with monkeypatch.context() as m:
        m.setattr(writer, "after_commit", lambda *a, **k: None)
        repo.commit(None, prewritten_shards=prewritten, branch="late", message="late ingest")
    run = _cli(url)
    bad = _json(run("verify", "--all", "--json", code=5))["bad"]
    assert any("erase --resume" in b["problem"] for b in bad)
    run("erase", "--resume", "--json")
    assert _json(run("verify", "--all", "--json"))["ok"]
    run("gc", "--json")
    assert _payload_hits(Repo.open(url).store, SECRET.encode()) == []
    assert len(_all_ids(Repo.open(url), "late")) == 1  # the other record of the late commit stays


def test_shards_written_before_an_erasure_and_committed_after_lose_the_record(history):
    """A distributed ingest's shards (written with a denylist read before the erasure) land
    after it: the writer's own check erases the record from its commit."""
    from dataversion.records import make_text_records

    url = history["url"]
    repo = Repo.open(url)
    prewritten = repo.write_shards(make_text_records([SECRET, "another fresh record"], sources=["late/a", "late/b"]))
    Repo.open(url).erase([SECRET_ID], reason="r")
    res = repo.commit(None, prewritten_shards=prewritten, branch="late", message="late ingest")
    assert _all_ids(Repo.open(url), "late") == [r for r in _all_ids(Repo.open(url), "late") if r != SECRET_ID]
    assert len(_all_ids(Repo.open(url), "late")) == 1
    assert res.commit_id in _json(_cli(url)("erasures", "--json"))[0]["commits"]
    assert _json(_cli(url)("verify", "--all", "--json"))["ok"]


def test_commits_after_an_erasure_keep_the_rewritten_shard_consistent(tmp_path):
    """The rewrite keeps the shard table key of the shard it replaced (no index entry
    moves): removing another record of that shard, adding records, repack and verify all
    stay consistent afterwards, and the erasure wrote no index node."""
    from dataversion.records import make_text_records

    repo = Repo.init(f"file://{tmp_path}/repo")
    texts = [f"record number {i} " * 8 for i in range(2000)]
    repo.commit(make_text_records(texts), message="one shard")
    ls = sorted(repo.ls("main"), key=lambda r: r["record_id"])
    doomed, other = ls[10]["record_id"], ls[1500]["record_id"]
    index_before = repo.read_packing(repo.resolve("main")).index
    repo.erase([doomed], reason="test")
    assert repo.read_packing(repo.resolve("main")).index == index_before  # no index entry moved
    repo.rm(ids=[other])
    repo.commit(make_text_records(["a new one", "and another"]), message="more")
    served = {r["record_id"] for r in repo.ls("main")}
    assert doomed not in served and other not in served and len(served) == 2000 - 2 + 2
    assert repo.verify()["ok"]
    repo.repack()
    assert {r["record_id"] for r in repo.ls("main")} == served
    assert repo.verify()["ok"]
