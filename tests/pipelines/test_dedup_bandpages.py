"""Band parts read by page (`pipelines/dedup/bandpages.py`): the rows of the asked keys,
exactly, wherever runs of equal keys (or of keys with equal top bits) cross pages."""

import numpy as np
import pyarrow as pa

from dataversion import Repo
from dataversion.objectdb import blob_key
from pipelines.dedup import bandpages, sharded
from pipelines.dedup import state as dstate


def _part(repo, keys: np.ndarray):
    n = len(keys)
    ids = np.frombuffer(np.random.default_rng(0).bytes(16 * n), "S16")
    rows = pa.Table.from_arrays(
        [pa.array((np.arange(n) % 7).astype(np.uint8)), pa.array(keys), sharded._id_col(ids)],
        names=["band", "key", "record_id"],
    )
    rows = dstate.sort_bands(rows)
    blob, fence = dstate.write_band_part(repo, rows)
    return rows, blob, bandpages.Fence.from_bytes(repo.read_blob(fence))


def test_runs_of_equal_keys_across_pages_are_read_whole(tmp_path):
    repo = Repo.init("file://" + str(tmp_path / "repo"))
    rng = np.random.default_rng(3)
    hi = np.uint64(5) << np.uint64(32)
    keys = np.concatenate(
        [
            rng.integers(0, 2**63, 100, dtype=np.uint64),
            np.full(40, 2**63 + 11, np.uint64),  # one key over three pages
            hi + rng.integers(0, 50, 60, dtype=np.uint64),  # equal top 32 bits over pages
            rng.integers(2**63 + 12, 2**64 - 1, 100, dtype=np.uint64),
        ]
    )
    rows, blob, fence = _part(repo, keys)
    assert fence.page_rows == bandpages.PAGE_ROWS and len(fence.first) > 10
    all_keys = rows.column("key").to_numpy()
    for ask in (
        np.array([2**63 + 11], np.uint64),
        np.unique(hi + np.arange(0, 50, 3, dtype=np.uint64)),
        np.unique(np.concatenate([all_keys[::9], rng.integers(0, 2**64 - 1, 30, dtype=np.uint64)])),
        np.array([0, 2**64 - 1], np.uint64),
    ):
        got = bandpages.rows_of_keys(repo.store, blob_key(blob), fence, ask)
        want = rows.filter(pa.array(np.isin(all_keys, ask)))
        assert got.equals(want)


def test_a_part_that_is_not_one_batch_of_band_rows_gets_no_fence(tmp_path):
    t = pa.table({"band": pa.array([1], pa.uint8()), "key": pa.array([3], pa.uint64())})
    assert bandpages.fence_bytes("x" * 32, dstate.part_bytes(t)) is None
    two = pa.concat_tables(
        [_part(Repo.init("file://" + str(tmp_path / "r")), np.arange(5, dtype=np.uint64))[0]] * 2
    )
    assert bandpages.fence_bytes("x" * 32, dstate.part_bytes(two)) is None
