"""Decoded copies in the local cache: a warm epoch decodes no Parquet and reads no shard
bytes; a damaged copy is never served (detected by its checksum, decoded again); the copy
is one Arrow record batch per shard (one chunk: a chunked table makes every `take` slow)."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pyarrow as pa
import pytest

pytest.importorskip("torch")

from dataversion import Repo  # noqa: E402
from dataversion.cache import LocalDiskCache  # noqa: E402
from dataversion.records import make_text_records  # noqa: E402
from dataversion.torch import SnapshotLoader  # noqa: E402

N = 1200


class CountingCache(LocalDiskCache):
    """Counts reads of shard bytes (what decoding needs); a warm cache needs none."""

    reads = 0

    def read(self, store, shard_id, **kw):
        CountingCache.reads += 1
        return super().read(store, shard_id, **kw)


@pytest.fixture
def url(tmp_path) -> str:
    url = "file://" + str(tmp_path / "repo")
    Repo.init(url).commit(make_text_records([f"text {i} " + "y" * (i % 40) for i in range(N)],
                                            labels=[str(i % 4) for i in range(N)]),
                          message="one", target_shard_bytes=8 * 1024)
    return url


def _epoch(url, cache, **kw) -> list[tuple[str, str, str]]:
    loader = SnapshotLoader(url, batch_size=64, window=300, columns=["text", "label"], cache=cache, **kw)
    return [row for b in loader for row in zip(b["record_id"], b["text"], b["label"])]


def _reference(url) -> list[tuple[str, str, str]]:
    return _epoch(url, "none", num_workers=0)


def test_warm_epoch_reads_no_shard_bytes_and_serves_the_same(url, tmp_path):
    ref = _reference(url)
    cache = CountingCache(str(tmp_path / "cache"))
    CountingCache.reads = 0
    assert _epoch(url, cache, num_workers=0) == ref
    shards = len(Repo.open(url).shard_table(Repo.open(url).read_packing(Repo.open(url).resolve("main"))))
    assert shards > 3 and CountingCache.reads == shards  # cold: each shard read once, to decode it
    copies = glob.glob(str(tmp_path / "cache" / "*" / "*.arrow"))
    assert len(copies) == shards
    for path in copies:
        table = pa.ipc.open_file(pa.memory_map(path)).read_all()
        assert all(col.num_chunks == 1 for col in table.columns)
    CountingCache.reads = 0
    assert _epoch(url, CountingCache(str(tmp_path / "cache")), num_workers=0) == ref
    assert CountingCache.reads == 0
    assert _epoch(url, LocalDiskCache(str(tmp_path / "cache")), num_workers=2) == ref


@pytest.mark.parametrize("damage", ["flip", "truncate", "sum"])
def test_a_damaged_decoded_copy_is_decoded_again_never_served(url, tmp_path, damage):
    ref = _reference(url)
    root = str(tmp_path / "cache")
    assert _epoch(url, LocalDiskCache(root), num_workers=0) == ref
    path = sorted(glob.glob(os.path.join(root, "*", "*.arrow")))[0]
    data = bytearray(Path(path).read_bytes())
    if damage == "flip":  # a byte inside the text data
        data[len(data) // 2] ^= 0x01
        Path(path).write_bytes(bytes(data))
    elif damage == "truncate":
        Path(path).write_bytes(bytes(data[: len(data) // 3]))
    else:
        Path(path + ".sum").write_text("0" * 32)
    CountingCache.reads = 0
    assert _epoch(url, CountingCache(root), num_workers=0) == ref
    assert CountingCache.reads == 1  # that shard decoded again from its verified bytes
    CountingCache.reads = 0
    assert _epoch(url, CountingCache(root), num_workers=0) == ref
    assert CountingCache.reads == 0


def test_a_copy_hashed_once_is_vouched_to_other_readers_until_its_file_changes(url, tmp_path, monkeypatch):
    """Every worker takes rows of every block, so each one hashed every decoded copy of
    the epoch. One process's hash now vouches for the copy to the others (`<id>.arrow.ok`:
    boot, file identity, checksum). A write to the copy, even one that keeps its size and
    puts its mtime back, changes its ctime: it is hashed again, found damaged, decoded
    again. Another boot hashes every copy again."""
    import dataversion.cache.local as local

    ref = _reference(url)
    root = str(tmp_path / "cache")
    assert _epoch(url, LocalDiskCache(root), num_workers=0) == ref
    copies = sorted(glob.glob(os.path.join(root, "*", "*.arrow")))
    hashed = []
    real = local.object_id
    monkeypatch.setattr(local, "object_id", lambda data: hashed.append(len(data)) or real(data))
    assert _epoch(url, LocalDiskCache(root), num_workers=0) == ref
    assert hashed == []  # vouched: no copy hashed again

    path = copies[0]
    st = os.stat(path)
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0x01
    Path(path).write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the same size and mtime as before
    CountingCache.reads = 0
    assert _epoch(url, CountingCache(root), num_workers=0) == ref
    assert CountingCache.reads == 1  # the damaged copy was hashed, refused, decoded again

    hashed.clear()
    monkeypatch.setattr(local, "_BOOT_ID", "another-boot")
    assert _epoch(url, LocalDiskCache(root), num_workers=0) == ref
    assert len(hashed) == len(copies)  # after a reboot, every copy is hashed before use


def test_a_prefetcher_leaves_a_shard_another_process_decodes_and_takes_the_next(url, tmp_path):
    """`prepare(wait=False)` (what the prefetcher calls) does not wait for a shard whose
    decode another process holds: it reports it and does nothing, so the workers of a
    machine decode different shards at once in a cold epoch instead of queueing on one."""
    from filelock import FileLock

    repo = Repo.open(url)
    shards = [s.id for s in repo.shard_table(repo.read_packing(repo.resolve("main")))]
    cache = LocalDiskCache(str(tmp_path / "cache"))
    other = FileLock(os.path.join(cache.root, "locks", shards[0] + ".arrow.lock"))
    with other:  # "another process" decoding shards[0]
        assert cache.prepare(repo.store, shards[0], wait=False) is False
        assert not os.path.exists(cache._sidecar(shards[0]))
        assert cache.prepare(repo.store, shards[1], wait=False) is True
        assert os.path.exists(cache._sidecar(shards[1]) + ".sum")
    assert cache.prepare(repo.store, shards[0], wait=False) is True
    assert cache.decoded(repo.store, shards[0]).num_rows > 0


def _pool_of_worker(path_dir):
    def init(worker_id):
        import pyarrow as pa

        with open(os.path.join(path_dir, f"w{worker_id}"), "w") as f:
            f.write(pa.default_memory_pool().backend_name)
    return init


def test_workers_allocate_from_jemalloc_where_pyarrow_has_it(url, tmp_path):
    """mimalloc (pyarrow's default) kept ~45 MB more freed pages per worker (peak PSS in
    benchmarks/bench_loader.py); the parent's pool stays the user's."""
    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        pytest.skip("this pyarrow is built without jemalloc")
    before = pa.default_memory_pool().backend_name
    out = tmp_path / "pools"
    out.mkdir()
    loader = SnapshotLoader(url, batch_size=64, columns=["label"], num_workers=2,
                            cache=LocalDiskCache(str(tmp_path / "cache")), worker_init_fn=_pool_of_worker(str(out)))
    assert sum(len(b["label"]) for b in loader) == N
    assert sorted(p.read_text() for p in out.iterdir()) == ["jemalloc", "jemalloc"]
    assert pa.default_memory_pool().backend_name == before
