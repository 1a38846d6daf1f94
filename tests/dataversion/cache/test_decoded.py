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
