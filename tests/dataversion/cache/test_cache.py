"""The read tier: LRU, concurrency, integrity, zero GETs when warm, Alluxio fallback, no orphans."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

from dataversion import Repo
from dataversion.cache import AlluxioCache, LocalDiskCache, status, warm
from dataversion.cli.cache import cache_group
from dataversion.errors import CorruptObjectError
from dataversion.hashing import object_id
from dataversion.records import make_text_records
from dataversion.shards import shard_key
from dataversion.stores import MemoryStore


def _store_with(n: int, size: int = 1000) -> tuple[MemoryStore, list[str]]:
    store = MemoryStore(f"cache-{os.getpid()}-{time.monotonic_ns()}")
    ids = []
    for i in range(n):
        data = bytes([i % 256]) * size + str(i).encode()
        sid = object_id(data)
        store.put(shard_key(sid), data)
        ids.append(sid)
    return store, ids


class FlakyStore(MemoryStore):
    """Returns corrupt bytes for the first `bad` GETs."""

    def __init__(self, name, bad):
        super().__init__(name)
        self.bad = bad

    def get(self, key):
        data = super().get(key)
        if self.bad > 0:
            self.bad -= 1
            return data[:-1] + b"!"
        return data


def test_lru_eviction(tmp_path):
    store, ids = _store_with(6)
    cache = LocalDiskCache(str(tmp_path), max_bytes=3500)
    for sid in ids[:3]:
        assert cache.read(store, sid).to_pybytes() == store.get(shard_key(sid))
    time.sleep(0.01)
    cache.read(store, ids[0])  # ids[0] is now the most recently used
    time.sleep(0.01)
    cache.read(store, ids[3])  # over budget: evicts the least recently used, ids[1]
    assert cache.contains(ids[0]) and not cache.contains(ids[1]) and cache.contains(ids[3])
    st = status(cache)
    assert st["evictions"] >= 1 and st["bytes"] <= 3500 and st["misses"] == 4 and st["hits"] == 1
    assert 0 < st["hit_rate"] < 1


def _reader(root, store, ids, q):
    cache = LocalDiskCache(root)
    ok = all(cache.read(store, sid).to_pybytes() == store.get(shard_key(sid)) for sid in ids)
    q.put(ok)


def test_concurrent_processes_fetch_each_shard_once(tmp_path):
    store, ids = _store_with(8, size=200_000)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_reader, args=(str(tmp_path), store, ids[::-1] if i % 2 else ids, q)) for i in range(4)]
    for p in procs:
        p.start()
    results = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert results == [True] * 4
    st = status(LocalDiskCache(str(tmp_path)))
    assert st["misses"] == 8 and st["hits"] == 24 and st["shards"] == 8
    assert not list(tmp_path.glob("*/.tmp-*"))


def test_corrupt_fetch_is_retried_once_then_named(tmp_path):
    store = FlakyStore("flaky-1", bad=1)
    data = b"x" * 100
    sid = object_id(data)
    store.put(shard_key(sid), data)
    cache = LocalDiskCache(str(tmp_path / "a"))
    assert cache.read(store, sid).to_pybytes() == data and store.stats["GET"] == 2
    store2 = FlakyStore("flaky-2", bad=5)
    store2.put(shard_key(sid), data)
    with pytest.raises(CorruptObjectError, match=sid):
        LocalDiskCache(str(tmp_path / "b")).read(store2, sid)
    # a cached copy that rots on disk is detected and fetched again
    path = Path(cache.path(sid))
    path.write_bytes(b"y" * 100)
    assert LocalDiskCache(str(tmp_path / "a")).read(store, sid).to_pybytes() == data


@pytest.mark.s3
def test_second_epoch_on_warm_cache_sends_zero_gets(s3_repo_url, tmp_path):
    torch_mod = pytest.importorskip("dataversion.torch")
    repo = Repo.init(s3_repo_url)
    repo.commit(make_text_records([f"text {i} " * 5 for i in range(600)]), branch="main", target_shard_bytes=8 * 1024)
    n_shards = len(repo.shard_table(repo.read_packing(repo.resolve("main"))))
    cache = LocalDiskCache(str(tmp_path / "cache"))
    loader = torch_mod.SnapshotLoader(s3_repo_url, batch_size=50, num_workers=0, cache=cache, window=100)
    store = loader.repo.store
    first = [r for b in loader for r in b["record_id"]]
    assert store.stats["GET"] >= n_shards
    store.stats.clear()
    loader.set_epoch(1)
    second = [r for b in loader for r in b["record_id"]]
    assert store.stats["GET"] == 0 and sorted(first) == sorted(second) and len(first) == 600
    # `cache warm` fills a fresh cache; the loader then sends no GET at all
    other = LocalDiskCache(str(tmp_path / "cache2"))
    result = warm(Repo.open(s3_repo_url), "main", other)
    assert result["fetched"] == n_shards
    loader2 = torch_mod.SnapshotLoader(s3_repo_url, batch_size=50, num_workers=0, cache=other, window=100)
    loader2.repo.store.stats.clear()
    assert sum(len(b["record_id"]) for b in loader2) == 600
    assert loader2.repo.store.stats["GET"] == 0


def test_alluxio_unreachable_falls_back_with_one_warning():
    store, ids = _store_with(3)
    tier = AlluxioCache("127.0.0.1:1,127.0.0.1:2", connect_timeout=0.5)  # nothing listens there
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for sid in ids * 2:
            assert tier.read(store, sid).to_pybytes() == store.get(shard_key(sid))
    assert time.perf_counter() - t < 5
    msgs = [w for w in caught if "Alluxio" in str(w.message)]
    assert len(msgs) == 1 and issubclass(msgs[0].category, RuntimeWarning)


def test_loader_with_unreachable_alluxio_warns_once(tmp_path):
    torch_mod = pytest.importorskip("dataversion.torch")
    url = "file://" + str(tmp_path / "repo")
    Repo.init(url).commit(make_text_records([f"t{i}" for i in range(200)]), branch="main", target_shard_bytes=1024)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader = torch_mod.SnapshotLoader(url, batch_size=20, num_workers=2, cache=AlluxioCache("127.0.0.1:1", connect_timeout=0.5))
        assert sum(len(b["record_id"]) for b in loader) == 200
    assert len([w for w in caught if "Alluxio" in str(w.message)]) == 1


@pytest.mark.skipif(not os.environ.get("DATAVERSION_ALLUXIO_WORKERS"), reason="no live Alluxio (set DATAVERSION_ALLUXIO_WORKERS)")
def test_live_alluxio(s3_repo_url):
    repo = Repo.init(s3_repo_url)
    repo.commit(make_text_records([f"alluxio {i}" for i in range(100)]), branch="main")
    tier = AlluxioCache()
    assert tier.probe()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for s in repo.shard_table(repo.read_packing(repo.resolve("main"))):
            assert tier.read(repo.store, s.id).to_pybytes() == repo.store.get(shard_key(s.id))


def test_cache_cli(tmp_path):
    from click.testing import CliRunner

    url = "file://" + str(tmp_path / "repo")
    Repo.init(url).commit(make_text_records([f"cli {i}" for i in range(50)]), branch="main")
    runner = CliRunner()
    res = runner.invoke(cache_group, ["warm", "main", "--repo", url, "--cache-dir", str(tmp_path / "c"), "--json"])
    assert res.exit_code == 0, res.output
    assert '"shards": 1' in res.output
    res = runner.invoke(cache_group, ["status", "--cache-dir", str(tmp_path / "c"), "--json"])
    assert res.exit_code == 0 and '"hit_rate"' in res.output
    res = runner.invoke(cache_group, ["warm", "nope", "--repo", url])
    assert res.exit_code == 3 and "unknown ref" in res.output


ORPHAN = textwrap.dedent(
    """
    import sys, time
    from dataversion.torch import SnapshotLoader
    loader = SnapshotLoader(sys.argv[1], batch_size=4, num_workers=2, window=50, prefetch=2)
    for i, batch in enumerate(loader):
        if i == 2:
            print("READY", flush=True)
        time.sleep(0.2)
    """
)


def test_no_orphans_after_sigkill(tmp_path):
    psutil = pytest.importorskip("psutil")
    pytest.importorskip("torch")
    url = "file://" + str(tmp_path / "repo")
    Repo.init(url).commit(make_text_records([f"orphan {i} " * 20 for i in range(2000)]), branch="main", target_shard_bytes=4096)
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3]), "DATAVERSION_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, str(script), url], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "READY"
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"still alive 5 s after the trainer was killed: {[p.pid for p in alive]}"
