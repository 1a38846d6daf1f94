"""Faults of the source store fail the run and are never recorded as properties of the data
(issue 17): nothing is committed, nothing is consumed, and a rerun after the fault ingests
everything. Also: `retry_rejected` for branches written before that rule, and the in-flight
marker that keeps a running ingest's objects from `gc`."""

from __future__ import annotations

import io
import re
import socket

import pytest

from dataversion import Repo
from pipelines.config import IngestConfig
from pipelines.filters import Drop
from pipelines.ingest import read_rejects, run_ingest
from pipelines.readers.source import Source, SourceFault

MULTI = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
DOCS = {f"docs/{i:02d}.txt": f"document number {i} says something of its own" for i in range(12)}


def _raw_bucket(s3_env, files=DOCS) -> str:
    client = s3_env.client()
    bucket = s3_env.new_bucket()
    for key, text in files.items():
        data = text.encode()
        client.put_object(bucket, f"raw/{key}", io.BytesIO(data), len(data))
    return f"s3://{bucket}/raw"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_an_object_gone_between_listing_and_reading_fails_the_run(s3_env, tmp_path, monkeypatch):
    """NotFound for an object listed a moment ago is no property of the input: fail, and
    the rerun (which lists again) ingests everything."""
    source = _raw_bucket(s3_env)
    repo_url = f"file://{tmp_path}/repo"
    real_list = Source.list

    def list_with_a_ghost(self, **kw):
        objs = real_list(self, **kw)
        return objs + [type(objs[0])("docs/zz-vanished.txt", "0" * 32, 10)]

    monkeypatch.setattr(Source, "list", list_with_a_ghost)
    with pytest.raises(SourceFault) as e:
        run_ingest(source, repo_url)
    msg = str(e.value)
    assert "\n" not in msg and "nothing committed or consumed" in msg
    assert "'docs/zz-vanished.txt'" in msg and s3_env.endpoint in msg and source in msg
    assert Repo.open(repo_url).branch_tip("main") is None  # no commit, nothing consumed
    monkeypatch.setattr(Source, "list", real_list)
    r = run_ingest(source, repo_url)
    assert (r.objects, r.kept, r.rejected) == (12, 12, 0)


@pytest.mark.parametrize("beam_args", [[], MULTI], ids=["in-process", "multi-process"])
def test_an_unreachable_s3_endpoint_after_listing_fails_the_run(
    s3_env, tmp_path, monkeypatch, beam_args
):
    """The outage of issue 17: the endpoint goes away after the listing. Before the fix
    every object became `rejected unreadable`, was consumed, and was lost for good."""
    source = _raw_bucket(s3_env)
    repo_url = f"file://{tmp_path}/repo"
    dead = f"http://127.0.0.1:{_closed_port()}"
    real_list = Source.list

    def list_then_outage(self, **kw):
        objs = real_list(self, **kw)
        monkeypatch.setenv("AWS_ENDPOINT_URL", dead)  # workers open their store after this
        return objs

    monkeypatch.setattr(Source, "list", list_then_outage)
    with pytest.raises(SourceFault) as e:
        run_ingest(source, repo_url, beam_args=beam_args)
    msg = str(e.value)
    assert "\n" not in msg and dead in msg and re.search(r"'docs/\d\d\.txt'", msg)
    assert "Traceback" not in msg
    assert Repo.open(repo_url).branch_tip("main") is None
    monkeypatch.setattr(Source, "list", real_list)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)
    r = run_ingest(source, repo_url)
    assert (r.objects, r.kept, r.rejected) == (12, 12, 0)


def test_a_local_read_error_fails_the_run_on_ingest_and_add(tmp_path, monkeypatch):
    """EACCES / EIO on a listed file is a fault of the machine, not a reject (`unreadable`
    before): ingest raises SourceFault, add raises StoreError, nothing is committed."""
    import errno

    import dataversion.scan as scan
    import pipelines.readers.source as source
    from dataversion.errors import StoreError

    real = scan.read_regular_file

    def denied(path, **kw):
        if path.endswith("b.txt"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real(path, **kw)

    monkeypatch.setattr(source, "read_regular_file", denied)
    monkeypatch.setattr(scan, "read_regular_file", denied)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("readable")
    (src / "b.txt").write_text("not readable by us")
    with pytest.raises(
        SourceFault, match=r"cannot read object 'b.txt' of file://.*Permission denied"
    ):
        run_ingest(str(src), f"file://{tmp_path}/repo")
    assert Repo.open(f"file://{tmp_path}/repo").branch_tip("main") is None
    repo = Repo.init(f"file://{tmp_path}/repo2")
    with pytest.raises(StoreError, match=r"cannot read .*b.txt: Permission denied"):
        repo.add([str(src)])
    assert repo.branch_tip("main") is None


def test_retry_rejected_reads_again_what_an_old_run_rejected_unreadable(tmp_path, monkeypatch):
    """A branch written before the fix holds `unreadable` rejects it consumed; the retry
    reads exactly those again (or all rejects), once."""
    import pipelines.readers.read as read

    src = tmp_path / "src"
    src.mkdir()
    for key, text in DOCS.items():
        (src / key).parent.mkdir(exist_ok=True)
        (src / key).write_text(text)
    (src / "docs" / "empty.txt").write_text("")
    repo_url = f"file://{tmp_path}/repo"
    real = read.read_item

    def old_behaviour(source, item, config):  # what the outage did before the fix
        if item.key in ("docs/03.txt", "docs/07.txt"):
            return Drop("unreadable", "cannot read object: cannot reach the S3 endpoint")
        return real(source, item, config)

    monkeypatch.setattr(read, "read_item", old_behaviour)
    first = run_ingest(str(src), repo_url)
    assert first.reasons == {"empty_file": 1, "unreadable": 2} and first.kept == 10
    monkeypatch.setattr(read, "read_item", real)
    assert run_ingest(str(src), repo_url).commit is None  # "nothing new": the data loss
    r = run_ingest(str(src), repo_url, retry_rejected="unreadable")
    assert (r.objects, r.objects_retried, r.kept, r.rejected) == (2, 2, 2, 0)
    repo = Repo.open(repo_url)
    assert repo.read_commit(r.commit).provenance["objects_retried"] == 2
    assert sorted(x["source"] for x in repo.ls("main")) == sorted(DOCS)
    # settled: the retried objects are not retried again; the empty file still is, for all
    assert run_ingest(str(src), repo_url, retry_rejected="unreadable").commit is None
    r = run_ingest(str(src), repo_url, retry_rejected=True)
    assert (r.objects_retried, r.reasons) == (1, {"empty_file": 1})
    # rejected again for the reason the branch holds: nothing changed, nothing committed
    assert r.commit is None and "rejected again" in r.message
    assert sorted(x["source"] for x in read_rejects(repo, first.commit)) == ["docs/03.txt", "docs/07.txt", "docs/empty.txt"]


def test_gc_during_an_ingest_keeps_its_scratch_and_its_shards(tmp_path, monkeypatch):
    """gc --grace 0 runs twice inside a run: after the pipeline wrote its results (scratch,
    shards), and again just before the commit; the ingest then commits and verifies."""
    import pipelines.ingest as ingest

    src = tmp_path / "src"
    src.mkdir()
    for key, text in DOCS.items():
        (src / key).parent.mkdir(exist_ok=True)
        (src / key).write_text(text)
    repo_url = f"file://{tmp_path}/repo"
    Repo.init(repo_url).commit(None, message="empty start", allow_empty=True)
    collected = []

    def gc_now():
        d = Repo.open(repo_url).gc(grace_seconds=0, expire_reflog_seconds=0)
        collected.append((d["deleted"], d["in_flight"]))

    real_read, real_commit = ingest._read_results, Repo.commit

    def read_after_gc(repo, scratch, *args):
        gc_now()
        return real_read(repo, scratch, *args)

    def commit_after_gc(self, *a, **kw):
        gc_now()
        return real_commit(self, *a, **kw)

    monkeypatch.setattr(ingest, "_read_results", read_after_gc)
    monkeypatch.setattr(Repo, "commit", commit_after_gc)
    r = run_ingest(str(src), repo_url, config=IngestConfig(target_shard_bytes=200))
    assert r.commit and r.kept == 12 and r.shards_written > 1
    assert [n for n, _ in collected] == [0, 0] and all(live >= 1 for _, live in collected)
    repo = Repo.open(repo_url)
    assert repo.verify()["ok"]
    assert sorted(x["source"] for x in repo.ls("main")) == sorted(DOCS)
    assert not list(repo.store.list("inflight/"))  # the marker is gone after the run


def test_a_failed_run_says_one_line_without_beam_tracebacks(tmp_path):
    """The CLI's stderr on a store fault: the `error:` line, not Beam's logged tracebacks of
    the DoFn that raised (a user saw ~90 lines of them before the one line). A real process:
    its logging is what a user's terminal gets."""
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("readable")
    (src / "b.txt").write_text("the disk fails here")
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import errno, sys\n"
        "import pipelines.readers.source as source\n"
        "real = source.read_regular_file\n"
        "def failing(path, **kw):\n"
        "    if path.endswith('b.txt'):\n"
        "        raise OSError(errno.EIO, 'Input/output error', path)\n"
        "    return real(path, **kw)\n"
        "source.read_regular_file = failing\n"
        "from dataversion.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    r = subprocess.run([sys.executable, str(driver), "ingest", str(src), "--repo", f"file://{tmp_path}/repo", "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 6, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and len(lines) <= 3, r.stderr
