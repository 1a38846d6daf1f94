"""The store contract, run unchanged against every backend, plus races and backend errors.

S3 cases run against the real SeaweedFS server from `tests/conftest.py` (marked `s3`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import dataversion.errors
from dataversion.errors import BadInputError, ConflictError, NotFoundError, StoreError
from dataversion.stores import LocalStore, MemoryStore, Store, open_store
from dataversion.stores.s3 import S3Store

BINARY = bytes(range(256)) * 3


@pytest.fixture(scope="module")
def s3_bucket(s3_server) -> str:
    """One bucket for this module: each S3 store below lives under its own fresh prefix."""
    return s3_server.new_bucket()


def _s3_store(server, bucket: str, **overrides) -> S3Store:
    options = {
        "endpoint": server.endpoint,
        "access_key": server.access_key,
        "secret_key": server.secret_key,
    }
    options.update(overrides)
    return S3Store(bucket, f"store-{uuid.uuid4().hex[:12]}", **options)


@pytest.fixture(params=["local", "memory", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An empty store of each kind."""
    if request.param == "local":
        return LocalStore(str(tmp_path / "store"), create=True)
    if request.param == "memory":
        return MemoryStore()
    server = request.getfixturevalue("s3_server")
    return _s3_store(server, request.getfixturevalue("s3_bucket"))


class TestStoreContract:
    """What every Store promises; see dataversion/stores/base.py."""

    @pytest.mark.parametrize("data", [b"hello", b"", BINARY], ids=["text", "empty", "binary"])
    def test_put_then_get_returns_the_bytes(self, store: Store, data: bytes) -> None:
        store.put("objects/ab/cdef", data)
        assert store.get("objects/ab/cdef") == data
        assert store.get_versioned("objects/ab/cdef")[0] == data

    def test_put_overwrites(self, store: Store) -> None:
        store.put("k", b"one")
        store.put("k", b"two")
        assert store.get("k") == b"two"

    def test_missing_key_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFoundError):
            store.get("no/such/key")
        with pytest.raises(NotFoundError):
            store.get_versioned("no/such/key")

    def test_a_directory_like_prefix_is_not_an_object(self, store: Store) -> None:
        store.put("dir/child", b"x")
        assert not store.exists("dir")
        with pytest.raises(NotFoundError):
            store.get("dir")

    def test_put_if_absent_creates_only_once(self, store: Store) -> None:
        assert store.put_if_absent("refs/heads/main", b"first") is True
        assert store.put_if_absent("refs/heads/main", b"second") is False
        assert store.get("refs/heads/main") == b"first"

    def test_put_if_match_with_current_token_replaces(self, store: Store) -> None:
        store.put("refs/heads/main", b"v1")
        _, token = store.get_versioned("refs/heads/main")
        store.put_if_match("refs/heads/main", b"v2", token)
        data, new_token = store.get_versioned("refs/heads/main")
        assert data == b"v2"
        assert new_token != token

    def test_put_if_match_with_stale_token_conflicts(self, store: Store) -> None:
        store.put("refs/heads/main", b"v1")
        _, stale = store.get_versioned("refs/heads/main")
        store.put_if_match("refs/heads/main", b"v2", stale)
        with pytest.raises(ConflictError):
            store.put_if_match("refs/heads/main", b"v3", stale)
        assert store.get("refs/heads/main") == b"v2"

    def test_put_if_match_after_a_plain_put_conflicts(self, store: Store) -> None:
        store.put("k", b"v1")
        _, stale = store.get_versioned("k")
        store.put("k", b"someone else")
        with pytest.raises(ConflictError):
            store.put_if_match("k", b"mine", stale)
        assert store.get("k") == b"someone else"

    def test_put_if_match_on_a_deleted_key_conflicts(self, store: Store) -> None:
        store.put("k", b"v1")
        _, token = store.get_versioned("k")
        store.delete("k")
        with pytest.raises(ConflictError):
            store.put_if_match("k", b"v2", token)
        assert not store.exists("k")

    def test_delete_if_match_with_current_token_deletes(self, store: Store) -> None:
        store.put("refs/heads/dev", b"v1")
        _, token = store.get_versioned("refs/heads/dev")
        store.delete_if_match("refs/heads/dev", token)
        assert not store.exists("refs/heads/dev")

    def test_delete_if_match_with_stale_token_conflicts_and_keeps(self, store: Store) -> None:
        store.put("refs/heads/dev", b"v1")
        _, stale = store.get_versioned("refs/heads/dev")
        store.put("refs/heads/dev", b"v2")
        with pytest.raises(ConflictError):
            store.delete_if_match("refs/heads/dev", stale)
        assert store.get("refs/heads/dev") == b"v2"

    def test_delete_if_match_on_a_deleted_key_conflicts(self, store: Store) -> None:
        store.put("refs/heads/dev", b"v1")
        _, token = store.get_versioned("refs/heads/dev")
        store.delete("refs/heads/dev")
        with pytest.raises(ConflictError):
            store.delete_if_match("refs/heads/dev", token)

    def test_a_key_deleted_by_cas_frees_its_name_as_a_directory_and_back(self, store: Store) -> None:
        store.put("refs/heads/a/b", b"v")
        _, token = store.get_versioned("refs/heads/a/b")
        store.delete_if_match("refs/heads/a/b", token)
        assert store.put_if_absent("refs/heads/a", b"w") is True  # no directory left in the way
        assert [o.key for o in store.list("refs/")] == ["refs/heads/a"]

    def test_list_with_prefix(self, store: Store) -> None:
        for key in ("commits/a1", "commits/b2", "commitsX", "refs/heads/main", "refs/tags/v1"):
            store.put(key, key.encode())
        assert sorted(o.key for o in store.list("commits/")) == ["commits/a1", "commits/b2"]
        assert sorted(o.key for o in store.list("refs/")) == ["refs/heads/main", "refs/tags/v1"]
        assert sorted(o.key for o in store.list("commits")) == [
            "commits/a1",
            "commits/b2",
            "commitsX",
        ]
        assert len(list(store.list())) == 5
        assert list(store.list("nothing/")) == []

    def test_list_reports_size_and_mtime(self, store: Store) -> None:
        store.put("a/b", b"12345")
        [info] = list(store.list("a/"))
        assert (info.key, info.size) == ("a/b", 5)
        assert info.mtime > 0

    def test_delete(self, store: Store) -> None:
        store.put("k", b"v")
        store.put("k2", b"v")
        store.delete("k")
        assert not store.exists("k")
        assert store.exists("k2")
        with pytest.raises(NotFoundError):
            store.get("k")
        store.delete("k")  # deleting a missing key is not an error
        assert [o.key for o in store.list()] == ["k2"]

    def test_exists(self, store: Store) -> None:
        assert not store.exists("k")
        store.put("k", b"")
        assert store.exists("k")

    def test_put_file(self, store: Store, tmp_path: Path) -> None:
        src = tmp_path / "upload.bin"
        src.write_bytes(BINARY)
        store.put_file("shards/0001", str(src))
        assert store.get("shards/0001") == BINARY

    def test_local_path_if_any_holds_the_bytes(self, store: Store) -> None:
        store.put("k", b"zero-copy")
        path = store.local_path("k")
        if path is not None:
            assert Path(path).read_bytes() == b"zero-copy"

    def test_stats_count_requests(self, store: Store) -> None:
        store.put("k", b"v")
        store.get("k")
        store.exists("k")
        assert store.stats["PUT"] >= 1
        assert store.stats["GET"] >= 1
        assert store.stats["HEAD"] >= 1


# -- two processes racing a compare-and-swap ------------------------------------------------

_RACER = r"""
import sys
from dataversion.errors import ConflictError
from dataversion.stores import open_store

url, key, name = sys.argv[1:4]
store = open_store(url)
print("ready", flush=True)
while True:
    line = sys.stdin.readline().split()
    if not line:
        break
    token, round_ = line
    data = f"{name}-{round_}".encode()
    print("armed", flush=True)
    assert sys.stdin.readline().strip() == "go"
    try:
        store.put_if_match(key, data, token)
        print("won", flush=True)
    except ConflictError:
        print("lost", flush=True)
"""


class _Racer:
    """A separate Python process that does one `put_if_match` per round on command."""

    def __init__(self, url: str, key: str, name: str, env: dict[str, str], log: Path):
        self.name = name
        self.log = log
        self._stderr = open(log, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _RACER, url, key, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            text=True,
        )

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, *words: str) -> str:
        line = self.proc.stdout.readline().strip()
        assert line in words, f"racer {self.name} said {line!r}; stderr:\n{self.log.read_text()}"
        return line

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


def _race(url: str, store: Store, env: dict[str, str], tmp_path: Path, rounds: int = 5) -> None:
    """Two processes CAS the same key from the same token, `rounds` times: one wins each."""
    key = "refs/heads/main"
    store.put(key, b"start")
    # The children import the same dataversion as this process, installed or not.
    pkg_root = str(Path(dataversion.errors.__file__).resolve().parents[1])
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [pkg_root, env.get("PYTHONPATH")]))}
    racers = [_Racer(url, key, n, env, tmp_path / f"racer-{n}.log") for n in ("A", "B")]
    try:
        for r in racers:
            r.expect("ready")
        for round_ in range(rounds):
            _, token = store.get_versioned(key)
            for r in racers:
                r.send(f"{token} {round_}")
            for r in racers:
                r.expect("armed")
            for r in racers:  # both are blocked on this line: release them together
                r.send("go")
            outcome = {r.name: r.expect("won", "lost") for r in racers}
            winners = [n for n, o in outcome.items() if o == "won"]
            assert len(winners) == 1, f"round {round_}: {outcome}"
            assert store.get(key) == f"{winners[0]}-{round_}".encode()
    finally:
        for r in racers:
            r.close()


def test_two_processes_race_put_if_match_on_local(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    store = LocalStore(str(root), create=True)
    _race("file://" + str(root), store, dict(os.environ), tmp_path)


@pytest.mark.s3
def test_two_processes_race_put_if_match_on_s3(s3_env, s3_bucket: str, tmp_path: Path) -> None:
    store = _s3_store(s3_env, s3_bucket)
    _race(f"s3://{s3_bucket}/{store.prefix}", store, dict(os.environ), tmp_path)


# -- S3 errors -------------------------------------------------------------------------------


@pytest.mark.s3
def test_s3_wrong_secret_is_a_store_error_naming_the_bucket(s3_server, s3_bucket: str) -> None:
    with pytest.raises(StoreError) as info:
        _s3_store(s3_server, s3_bucket, secret_key="not-the-secret")
    message = str(info.value)
    assert f"bucket {s3_bucket} at {s3_server.endpoint}" in message
    assert "store-" not in message  # the prefix is not the bucket
    assert "SignatureDoesNotMatch" in message


@pytest.mark.s3
def test_s3_wrong_secret_on_an_object_names_the_key(s3_server, s3_bucket: str) -> None:
    store = _s3_store(s3_server, s3_bucket)
    store.put("objects/x", b"x")
    # Same store, new credentials: the next request is the one that must fail clearly.
    from minio import Minio

    store.client = Minio(
        s3_server.endpoint.split("://", 1)[1],
        access_key=s3_server.access_key,
        secret_key="not-the-secret",
        secure=False,
    )
    with pytest.raises(StoreError) as info:
        store.get("objects/x")
    assert s3_bucket in str(info.value) and "objects/x" in str(info.value)


@pytest.mark.s3
def test_s3_missing_bucket_is_not_found_and_not_created(s3_server) -> None:
    bucket = f"missing-{uuid.uuid4().hex[:12]}"
    with pytest.raises(NotFoundError) as info:
        _s3_store(s3_server, bucket)
    assert f"bucket {bucket} does not exist at {s3_server.endpoint}" in str(info.value)
    assert "--create-bucket" in str(info.value)
    assert not s3_server.client().bucket_exists(bucket)


@pytest.mark.s3
def test_s3_create_bucket_makes_the_bucket(s3_server) -> None:
    bucket = f"created-{uuid.uuid4().hex[:12]}"
    store = _s3_store(s3_server, bucket, create_bucket=True)
    store.put("k", b"v")
    assert s3_server.client().bucket_exists(bucket)


@pytest.mark.s3
def test_repo_init_on_a_missing_bucket_is_an_error_unless_asked(s3_env) -> None:
    from dataversion import Repo

    bucket = f"missing-{uuid.uuid4().hex[:12]}"
    with pytest.raises(NotFoundError) as info:
        Repo.init(f"s3://{bucket}/repo")
    assert str(info.value) == (f"bucket {bucket} does not exist at {s3_env.endpoint} "
                               "(create it, or pass --create-bucket to `dataversion init`)")
    assert not s3_env.client().bucket_exists(bucket)
    repo = Repo.init(f"s3://{bucket}/repo", create_bucket=True)
    assert s3_env.client().bucket_exists(bucket)
    assert Repo.open(repo.url).url == repo.url


@pytest.mark.s3
def test_open_store_reads_s3_settings_from_the_environment(s3_repo_url: str) -> None:
    store = open_store(s3_repo_url)
    assert isinstance(store, S3Store)
    store.put("k", b"v")
    assert open_store(s3_repo_url).get("k") == b"v"


@pytest.mark.s3
def test_s3_stores_with_different_prefixes_do_not_see_each_other(s3_server, s3_bucket: str) -> None:
    a, b = _s3_store(s3_server, s3_bucket), _s3_store(s3_server, s3_bucket)
    a.put("k", b"a")
    assert not b.exists("k")
    assert list(b.list()) == []


# -- LocalStore paths ------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["../escape", "a/../../escape", "a/..", "/etc/passwd"])
@pytest.mark.parametrize("op", ["get", "put", "put_if_absent", "exists", "delete"])
def test_local_store_rejects_keys_outside_the_root(tmp_path: Path, key: str, op: str) -> None:
    store = LocalStore(str(tmp_path / "repo"), create=True)
    args = {"get": (), "put": (b"x",), "put_if_absent": (b"x",), "exists": (), "delete": ()}[op]
    with pytest.raises(BadInputError):
        getattr(store, op)(key, *args)
    assert not (tmp_path / "escape").exists()


def test_local_store_without_create_needs_the_directory(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        LocalStore(str(tmp_path / "absent"))


def _fsynced_paths(monkeypatch) -> list[str]:
    """Record the path of every fd os.fsync is called on (the real flush still happens)."""
    seen: list[str] = []
    real = os.fsync

    def fsync(fd):
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name fsynced files")
def test_a_commit_flushes_what_must_survive_a_power_cut_and_not_its_inflight_marker(tmp_path, monkeypatch):
    """The marker that keeps a concurrent gc off a running commit protects a live process:
    it is visible at once (a gc reads it) and needs no disk flush. The commit's objects,
    its packing pointer, ref and reflog are flushed before the commit returns."""
    from dataversion import Repo
    from dataversion.inflight import InFlight
    from dataversion.records import make_text_records

    repo = Repo.init(f"file://{tmp_path}/repo")
    repo.commit(make_text_records(["base"]), message="base")
    seen = _fsynced_paths(monkeypatch)
    with InFlight(repo.store, "test") as marker:
        assert repo.store.exists(marker.key)  # a gc sees it
    repo.commit(make_text_records(["one", "two"]), message="two")
    flushed = [os.path.relpath(p, tmp_path / "repo") for p in seen]
    assert not [p for p in flushed if p.startswith("inflight")], flushed
    for kind in ("shards", "tree", "commits", "history", "packing", "refs", "reflog"):
        assert any(p.startswith(kind) for p in flushed), (kind, flushed)


def test_local_objects_get_the_mode_the_umask_gives(tmp_path):
    """mkstemp's 0600 made a shared file:// repository unreadable to other users: objects are
    written with 0666 less the umask, as `open()` creates files."""
    import os
    import stat

    from dataversion import Repo
    from dataversion.records import make_text_records

    umask = os.umask(0)
    os.umask(umask)
    repo = Repo.init(f"file://{tmp_path}/repo")
    repo.commit(make_text_records(["one text"]), message="m")
    modes = {stat.S_IMODE(os.stat(os.path.join(d, f)).st_mode) for d, _, fs in os.walk(tmp_path / "repo") for f in fs}
    assert modes == {0o666 & ~umask}, sorted(map(oct, modes))
