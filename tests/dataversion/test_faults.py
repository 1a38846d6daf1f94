"""The S3 store when the network fails at the worst moment, through `tests/faultproxy.py`.

Each test talks to the real SeaweedFS server through a loopback fault proxy and switches a
fault on just before the request it is about: a reply lost after the server did the write,
a connection reset mid-body, a stall past the read timeout, an outage.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

import dataversion.errors
from dataversion import Repo
from dataversion.errors import ConflictError, NotFoundError, StoreError
from dataversion.records import make_text_records
from dataversion.stores.s3 import S3Store

pytestmark = pytest.mark.s3

BLOB = bytes(range(256)) * 400  # 100 KiB: big enough to be cut mid-body


def _put_on(suffix: str, *, conditional: str | None = None):
    """A predicate: a PUT whose key ends with `suffix` (and carries the conditional header)."""

    def match(r) -> bool:
        return r.method == "PUT" and r.path.endswith(suffix) and (conditional is None or conditional in r.headers)

    return match


def _get_of(suffix: str):
    return lambda r: r.method == "GET" and r.path.endswith(suffix)


def _options(server, proxy) -> dict[str, str]:
    return {"endpoint": proxy.endpoint, "access_key": server.access_key, "secret_key": server.secret_key}


@pytest.fixture
def bucket(s3_server) -> str:
    return s3_server.new_bucket()


@pytest.fixture
def store(s3_server, fault_proxy, bucket) -> S3Store:
    return S3Store(bucket, f"faults-{uuid.uuid4().hex[:8]}", **_options(s3_server, fault_proxy))


@pytest.fixture
def repo(s3_server, fault_proxy, bucket) -> Repo:
    return Repo.init(f"s3://{bucket}/repo", **_options(s3_server, fault_proxy))


# -- (a) (b) a lost reply of a compare-and-swap that landed ------------------------------------


def test_lost_reply_of_a_branch_update_still_commits_and_logs(repo, fault_proxy):
    first = repo.commit(make_text_records(["one"]), branch="main", message="first")
    fault_proxy.drop_reply(_put_on("/refs/heads/main", conditional="if-match"))
    second = repo.commit(make_text_records(["two"]), branch="main", message="second")
    assert fault_proxy.fired("drop_reply") == 1
    assert repo.branch_tip("main") == second.commit_id
    entries = repo.reflog("main")
    assert [(e["old"], e["new"]) for e in entries] == [(None, first.commit_id), (first.commit_id, second.commit_id)]


def test_lost_reply_of_a_branch_creation_still_commits(repo, fault_proxy):
    fault_proxy.drop_reply(_put_on("/refs/heads/main", conditional="if-none-match"))
    first = repo.commit(make_text_records(["one"]), branch="main")
    assert fault_proxy.fired("drop_reply") == 1
    assert repo.branch_tip("main") == first.commit_id
    assert [e["new"] for e in repo.reflog("main")] == [first.commit_id]


def test_lost_reply_of_a_commit_through_the_cli_exits_0(s3_server, fault_proxy, bucket, tmp_path):
    url = f"s3://{bucket}/cli"
    repo = Repo.init(url, **_options(s3_server, fault_proxy))
    first = repo.commit(make_text_records(["one"]), branch="main")
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.txt").write_text("a record that lands although its reply is lost")
    pkg_root = str(Path(dataversion.errors.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [pkg_root, os.environ.get("PYTHONPATH")])),
        "AWS_ENDPOINT_URL": fault_proxy.endpoint,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "DATAVERSION_S3_RETRIES": "5",
    }
    for name in ("AWS_ENDPOINT_URL_S3", "S3_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(name, None)
    fault_proxy.drop_reply(_put_on("/refs/heads/main", conditional="if-match"))
    proc = subprocess.run(
        [sys.executable, "-m", "dataversion", "add", str(raw), "-m", "lost reply", "--repo", url],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert fault_proxy.fired("drop_reply") == 1
    # The retry said what it was doing (logging's last-resort handler prints WARNINGs).
    assert "S3 endpoint" in proc.stderr and "refs/heads/main; retry 1/4" in proc.stderr, proc.stderr
    tip = repo.branch_tip("main")
    assert tip != first.commit_id and list(repo.read_commit(tip).parents) == [first.commit_id]
    assert [e["new"] for e in repo.reflog("main")] == [first.commit_id, tip]


def test_lost_reply_of_a_tag_creation_is_success_not_already_exists(repo, fault_proxy):
    c = repo.commit(make_text_records(["one"]), branch="main")
    fault_proxy.drop_reply(_put_on("/refs/tags/v1", conditional="if-none-match"))
    assert repo.create_tag("v1", "main") == c.commit_id
    assert fault_proxy.fired("drop_reply") == 1
    assert repo.tags() == {"v1": c.commit_id}
    assert [e.new for e in repo.refs.reflog("refs/tags/v1")] == [c.commit_id]
    with pytest.raises(ConflictError, match="already exists"):  # a real second creation still fails
        repo.create_tag("v1", "main")


def test_lost_reply_of_a_losing_compare_and_swap_is_still_a_conflict(store, fault_proxy):
    store.put("refs/heads/main", b"v1")
    _, stale = store.get_versioned("refs/heads/main")
    store.put("refs/heads/main", b"someone else")
    fault_proxy.drop_reply(_put_on("/refs/heads/main", conditional="if-match"))
    with pytest.raises(ConflictError):
        store.put_if_match("refs/heads/main", b"mine", stale)
    assert fault_proxy.fired("drop_reply") == 1
    assert store.get("refs/heads/main") == b"someone else"


def test_lost_reply_of_a_losing_create_is_still_already_exists(store, fault_proxy):
    store.put("refs/tags/v1", b"theirs")
    fault_proxy.drop_reply(_put_on("/refs/tags/v1"))
    assert store.put_if_absent("refs/tags/v1", b"mine") is False
    assert fault_proxy.fired("drop_reply") == 1
    assert store.get("refs/tags/v1") == b"theirs"


def test_outage_before_a_compare_and_swap_lands_it_once_when_the_server_is_back(store, fault_proxy):
    store.put("refs/heads/main", b"v1")
    _, token = store.get_versioned("refs/heads/main")
    fault_proxy.refuse()
    threading.Timer(0.3, fault_proxy.passthrough).start()
    store.put_if_match("refs/heads/main", b"v2", token)  # refused, read back, then resent
    assert fault_proxy.fired("refuse") >= 1
    assert store.get("refs/heads/main") == b"v2"


def test_stalled_reply_of_a_branch_update_past_the_read_timeout_still_commits(s3_server, fault_proxy, bucket, monkeypatch):
    monkeypatch.setenv("DATAVERSION_S3_READ_TIMEOUT", "1")
    repo = Repo.init(f"s3://{bucket}/stall", **_options(s3_server, fault_proxy))
    first = repo.commit(make_text_records(["one"]), branch="main")
    fault_proxy.stall(3, _put_on("/refs/heads/main", conditional="if-match"))
    second = repo.commit(make_text_records(["two"]), branch="main")
    assert fault_proxy.fired("stall") == 1
    assert repo.branch_tip("main") == second.commit_id
    assert [e["new"] for e in repo.reflog("main")] == [first.commit_id, second.commit_id]


def test_lost_reply_of_a_branch_deletion_still_deletes(repo, fault_proxy):
    c = repo.commit(make_text_records(["one"]), branch="main")
    repo.create_branch("dev", "main")
    fault_proxy.drop_reply(lambda r: r.method == "DELETE" and r.path.endswith("/refs/heads/dev"))
    assert repo.delete_branch("dev") == c.commit_id
    assert fault_proxy.fired("drop_reply") == 1
    assert "dev" not in repo.branches()
    assert [e.new for e in repo.refs.reflog("refs/heads/dev")] == [c.commit_id, None]


# -- (c) reset mid-body -----------------------------------------------------------------------


def test_reset_mid_body_on_a_get_is_retried_transparently(store, fault_proxy):
    store.put("shards/blob", BLOB)
    fault_proxy.reset_mid_body(_get_of("/shards/blob"))
    assert store.get("shards/blob") == BLOB
    assert fault_proxy.fired("reset_mid_body") == 1


def test_reset_mid_body_on_a_ranged_read_is_retried_transparently(store, fault_proxy):
    store.put("shards/blob", BLOB)
    f = store.open_input("shards/blob")
    f.seek(1000)
    fault_proxy.reset_mid_body(_get_of("/shards/blob"))
    assert f.read(50_000) == BLOB[1000:51_000]
    assert fault_proxy.fired("reset_mid_body") == 1


def test_reset_mid_body_on_a_listing_resumes_it(store, fault_proxy):
    keys = sorted(f"objects/{i:04d}" for i in range(30))
    for k in keys:
        store.put(k, b"x")
    fault_proxy.reset_mid_body(lambda r: r.method == "GET" and "list-type=2" in r.query)
    assert sorted(o.key for o in store.list("objects/")) == keys
    assert fault_proxy.fired("reset_mid_body") == 1


# -- (d) an outage ----------------------------------------------------------------------------


def test_outage_is_a_store_error_naming_endpoint_and_key_within_the_retry_budget(s3_server, fault_proxy, bucket, monkeypatch, caplog):
    monkeypatch.setenv("DATAVERSION_S3_RETRIES", "3")
    store = S3Store(bucket, "outage", **_options(s3_server, fault_proxy))
    store.put("objects/k", b"v")
    fault_proxy.refuse()
    caplog.set_level(logging.WARNING, logger="dataversion.s3")
    for op in (lambda: store.get("objects/k"), lambda: store.exists("objects/k"),
               lambda: store.put_if_absent("objects/k", b"v"), lambda: list(store.list("objects/"))):
        caplog.clear()
        t0 = time.monotonic()
        with pytest.raises(StoreError) as info:
            op()
        assert not isinstance(info.value, NotFoundError)
        assert time.monotonic() - t0 < 10
        assert fault_proxy.endpoint in str(info.value) and "objects/" in str(info.value)
        # Retries say what they are doing: one line per retry, naming endpoint and key.
        lines = [r.getMessage() for r in caplog.records if r.name == "dataversion.s3"]
        assert len(lines) == 2, lines
        assert all(fault_proxy.endpoint in line and "objects/" in line for line in lines)
        assert "retry 1/2" in lines[0] and "retry 2/2" in lines[1]


def test_outage_when_opening_a_repository_is_a_store_error_not_not_found(s3_server, fault_proxy, bucket, monkeypatch):
    monkeypatch.setenv("DATAVERSION_S3_RETRIES", "2")
    url = f"s3://{bucket}/repo"
    Repo.init(url, **_options(s3_server, fault_proxy))
    fault_proxy.refuse()
    with pytest.raises(StoreError) as info:
        Repo.open(url, **_options(s3_server, fault_proxy))
    assert not isinstance(info.value, NotFoundError)
    assert fault_proxy.endpoint in str(info.value)


def test_no_server_at_the_endpoint_is_connection_refused_naming_the_bucket(s3_server, bucket, monkeypatch, caplog):
    import socket

    monkeypatch.setenv("DATAVERSION_S3_RETRIES", "2")
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    caplog.set_level(logging.WARNING, logger="dataversion.s3")
    with pytest.raises(StoreError) as info:
        S3Store(bucket, "repo", endpoint=dead, access_key=s3_server.access_key, secret_key=s3_server.secret_key)
    assert str(info.value).startswith(f"cannot open bucket {bucket} at {dead}: S3 endpoint unreachable (ConnectionRefused)")
    assert [r.getMessage() for r in caplog.records] == [
        f"S3 endpoint {dead} unreachable (ConnectionRefused) opening bucket {bucket}; retry 1/1 in 0.2s"
    ]


# -- (e) a stall ------------------------------------------------------------------------------


def test_stall_past_the_read_timeout_is_retried(s3_server, fault_proxy, bucket, monkeypatch):
    monkeypatch.setenv("DATAVERSION_S3_READ_TIMEOUT", "1")
    store = S3Store(bucket, "stall", **_options(s3_server, fault_proxy))
    store.put("shards/blob", BLOB)
    fault_proxy.stall(3, _get_of("/shards/blob"))
    t0 = time.monotonic()
    assert store.get("shards/blob") == BLOB
    assert fault_proxy.fired("stall") == 1
    assert time.monotonic() - t0 < 3  # the retry did not wait for the stalled reply


def test_stall_that_never_ends_is_a_clear_store_error(s3_server, fault_proxy, bucket, monkeypatch):
    monkeypatch.setenv("DATAVERSION_S3_READ_TIMEOUT", "1")
    monkeypatch.setenv("DATAVERSION_S3_RETRIES", "2")
    store = S3Store(bucket, "stall", **_options(s3_server, fault_proxy))
    store.put("shards/blob", BLOB)
    fault_proxy.stall(5, _get_of("/shards/blob"), count=10)
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="timed out") as info:
        store.get("shards/blob")
    assert time.monotonic() - t0 < 5
    assert fault_proxy.endpoint in str(info.value) and "shards/blob" in str(info.value)
