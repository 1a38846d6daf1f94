"""Tree-node bundles: a fresh process locates its blocks from the bundle the first one left
(no read per node), and a bundle's content is never trusted: a node whose bytes do not hash
to its id is read from the store, so the batches are the same."""

from __future__ import annotations

import glob
from pathlib import Path

import pyarrow as pa
import pytest

pytest.importorskip("torch")

from dataversion import Repo  # noqa: E402
from dataversion.records import make_text_records  # noqa: E402
from dataversion.torch import SnapshotDataset  # noqa: E402
from dataversion.training import blocks as blocks_mod  # noqa: E402
from dataversion.training import dataset as dataset_mod  # noqa: E402
from dataversion.training import nodes as nodes_mod  # noqa: E402
from dataversion.tree import NODE_CACHE, TREE_PREFIX  # noqa: E402

N = 3000


@pytest.fixture(autouse=True)
def _small_blocks(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAVERSION_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(dataset_mod, "block_sizes", lambda repo, commit: blocks_mod.block_sizes(repo, commit, 500))


@pytest.fixture
def url(tmp_path) -> str:
    url = "file://" + str(tmp_path / "repo")
    Repo.init(url).commit(make_text_records([f"doc {i} " + "z" * (i % 30) for i in range(N)]), message="one",
                          target_shard_bytes=16 * 1024)
    return url


def _epoch(url) -> tuple[list, int]:
    """Ids and texts of one epoch in a process with an empty node cache (as a fresh worker),
    and how many tree nodes it read from the store."""
    NODE_CACHE.clear()
    ds = SnapshotDataset(url, batch_size=100, window=400, columns=["text"], cache="local")
    reads = {"n": 0}
    get = ds.repo.store.get

    def counting_get(key):
        if key.startswith(TREE_PREFIX):
            reads["n"] += 1
        return get(key)

    ds.repo.store.get = counting_get
    NODE_CACHE.clear()  # only what the blocks need, from here on
    rows = [(r, t) for b in ds for r, t in zip(b["record_id"], b["text"])]
    return rows, reads["n"]


def test_a_fresh_process_locates_from_the_bundles_without_node_reads(url, tmp_path):
    cold, cold_reads = _epoch(url)
    bundles = glob.glob(str(tmp_path / "cache" / "*" / "*.nodes"))
    assert len(bundles) >= 5 and cold_reads > 50
    warm, warm_reads = _epoch(url)
    assert warm == cold and len(warm) == N
    assert warm_reads <= 5  # the few inner nodes above the blocks (read for every block size)


@pytest.mark.parametrize("damage", ["node", "garbage"])
def test_a_damaged_bundle_is_not_trusted(url, tmp_path, damage):
    cold, _ = _epoch(url)
    for path in glob.glob(str(tmp_path / "cache" / "*" / "*.nodes")):
        if damage == "garbage":
            Path(path).write_bytes(b"not a bundle")
            continue
        table = pa.ipc.open_file(pa.memory_map(path)).read_all()
        datas = table.column("data").to_pylist()
        datas = [d[:-1] + bytes([d[-1] ^ 1]) for d in datas]  # every node's bytes changed
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, nodes_mod.BUNDLE_SCHEMA) as w:
            w.write_table(pa.table({"id": table.column("id"), "data": datas}, schema=nodes_mod.BUNDLE_SCHEMA))
        Path(path).write_bytes(sink.getvalue().to_pybytes())
    again, reads = _epoch(url)
    assert again == cold
    assert reads > 50  # every node read (and checked) from the store instead
