"""BatchReader: what a worker holds while it builds batches (memory bounded by the window,
not by the epoch) and that the batches are the ones the order names."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from dataversion import Repo  # noqa: E402
from dataversion.records import ids_as_numpy, make_text_records  # noqa: E402
from dataversion.torch import SnapshotDataset  # noqa: E402
from dataversion.training import blocks as blocks_mod  # noqa: E402
from dataversion.training import dataset as dataset_mod  # noqa: E402
from dataversion.training.batches import BatchReader  # noqa: E402

N = 2000
BLOCK = 100  # content blocks of at most 100 records: a 2,000-record commit has ~20+
WINDOW = 200


@pytest.fixture(autouse=True)
def _small_blocks(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAVERSION_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(dataset_mod, "block_sizes", lambda repo, commit: blocks_mod.block_sizes(repo, commit, BLOCK))


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> str:
    url = "file://" + str(tmp_path_factory.mktemp("batches") / "repo")
    repo = Repo.init(url)
    repo.commit(make_text_records([f"text {i} " + "x" * (i % 50) for i in range(N)]), message="one",
                target_shard_bytes=16 * 1024)
    return url


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("cache", ["local", "none"])
def test_a_reader_holds_the_blocks_of_its_window_not_of_the_epoch(url, shuffle, cache):
    ds = SnapshotDataset(url, batch_size=32, window=WINDOW, shuffle=shuffle, columns=["text"], cache=cache)
    assert len(ds.sizes) >= 15
    order = ds.order()
    until = order.shard_needed_until()
    plan = ds.plan()
    reader = BatchReader(ds, order)
    held_max, served = 0, []
    try:
        for i in range(plan.num_batches):
            raw = reader.batch(plan, i)
            first = int(plan.batch_positions(i).min())
            # every block still held is read again by this batch or a later one
            assert all(until[b] > first for b in reader.tables), (i, sorted(reader.tables))
            held_max = max(held_max, len(reader.tables))
            served += ids_as_numpy(raw.table.column(0)).tolist()
    finally:
        reader.close()
    assert held_max <= 5  # a 200-sample window spans a few 100-record blocks
    in_id_order = Repo.open(url).tree(ds.commit_id).entries()["id"]
    assert served == in_id_order[order.flat_at(list(range(N)))].tolist()  # the order's samples, each once


def _within(buf, mapped) -> bool:
    return mapped.address <= buf.address and buf.address + buf.size <= mapped.address + mapped.size


def test_a_block_spanning_shards_is_served_from_the_mapped_copies_without_a_copy(url, tmp_path):
    """A block's rows stay where the memory-mapped decoded shards hold them (one part per
    shard): gathering a block never copies its payloads (an image block of 16,384 records
    copied per worker was ~1 GB of private memory each)."""
    import pyarrow as pa

    ds = SnapshotDataset(url, batch_size=32, window=WINDOW, shuffle=True, columns=["text"], cache="local")
    reader = BatchReader(ds, ds.order())
    try:
        spanning = None
        for b in range(len(ds.sizes)):
            if len({g.shard for g in reader._block_groups(b)}) > 1:
                spanning = reader._shard(b)[0]
                break
        assert spanning is not None, "the fixture's blocks should cross shard boundaries"
        # the reader's own memory-mapped decoded shards
        sidecars = [t.column("text").chunk(0).buffers()[2] for t in reader._decoded.values()]
        assert sidecars and all(isinstance(b, pa.Buffer) for b in sidecars)
        for part in getattr(spanning, "parts", [spanning]):
            data = part.column("text").chunk(0).buffers()[2]
            assert any(_within(data, m) for m in sidecars), "a block part was copied out of its shard's mapping"
        # and the block reads back in id order, as one table would
        assert spanning.table().column("record_id").to_pylist() == sorted(spanning.table().column("record_id").to_pylist())
        assert [i.tobytes() for i in spanning.ids] == spanning.table().column("record_id").to_pylist()
    finally:
        reader.close()
