"""The order is a function of (content root, seed, epoch) only: content-tree blocks, not
shards. Train, checkpoint, repack, resume: the remaining sequence is the uninterrupted
run's, and `lineage --record` answers stay exact."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from dataversion import Repo  # noqa: E402
from dataversion.porcelain.repack import repack  # noqa: E402
from dataversion.records import ids_as_numpy, make_text_records  # noqa: E402
from dataversion.torch import SnapshotLoader  # noqa: E402
from dataversion.training import lineage  # noqa: E402
from dataversion.training.blocks import BLOCK_RECORDS, block_sizes  # noqa: E402

N = 40_000  # several content blocks


def _texts(lo: int, hi: int) -> list[str]:
    return [f"sample {i}" for i in range(lo, hi)]


@pytest.fixture(scope="module")
def two_repos(tmp_path_factory):
    """The same records: one commit in one repo; six commits, a delete and a re-add in another."""
    base = tmp_path_factory.mktemp("blocks")
    a = Repo.init(str(base / "a"))
    a.commit(make_text_records(_texts(0, N)), message="all")
    b = Repo.init(str(base / "b"))
    step = N // 5
    for k in range(5):
        b.commit(make_text_records(_texts(k * step, (k + 1) * step)), message=f"part {k}", target_shard_bytes=64 * 1024)
    gone = ids_as_numpy(make_text_records(_texts(10, 20)).column("record_id"))
    b.commit(None, remove_ids=gone, message="rm")
    b.commit(make_text_records(_texts(10, 20)), message="re-add")
    return a, b


def _ids(loader, batches=None) -> list[str]:
    out = []
    for i, batch in enumerate(loader):
        if batches is not None and i >= batches:
            break
        out += batch["record_id"]
    return out


def _loader(repo, **kw):
    kw.setdefault("batch_size", 500)
    kw.setdefault("num_workers", 0)
    kw.setdefault("columns", ["text"])
    kw.setdefault("cache", "none")
    return SnapshotLoader(repo.url, **kw)


def test_same_records_same_root_same_blocks_same_order_whatever_the_packing(two_repos):
    a, b = two_repos
    ta, tb = a.resolve("main"), b.resolve("main")
    assert ta != tb and a.root_of(ta) == b.root_of(tb)  # other history, same content
    assert len(a.shard_table(a.read_packing(ta))) < len(b.shard_table(b.read_packing(tb)))
    sizes = block_sizes(a, ta)
    assert sizes == block_sizes(b, tb) and len(sizes) >= 3 and max(sizes) <= BLOCK_RECORDS and sum(sizes) == N
    for seed in (0, 7):
        assert _ids(_loader(a, seed=seed), 6) == _ids(_loader(b, seed=seed), 6)


def test_train_checkpoint_repack_resume_continues_the_uninterrupted_sequence(tmp_path):
    repo = Repo.init(str(tmp_path / "r"))
    step = N // 4
    for k in range(4):
        repo.commit(make_text_records(_texts(k * step, (k + 1) * step)), message=f"part {k}", target_shard_bytes=32 * 1024)
    tip = repo.resolve("main")
    full = _ids(_loader(repo, ref=tip, seed=3))
    assert len(full) == N
    ld = _loader(repo, ref=tip, seed=3)
    done = []
    for i, batch in enumerate(ld):
        done += batch["record_id"]
        if i == 29:
            break
    state = ld.state_dict()
    assert state["position"] == 30 * 500 and done == full[: 30 * 500]
    entry = lineage.record_checkpoint(repo, state, checkpoint=str(tmp_path / "ckpt.pt"), run="r", step=30)
    probe = [full[0], full[14_999], full[15_000], full[-1]]
    saw_before = [[e.id for e in lineage.checkpoints_that_saw(repo, rid)] for rid in probe]
    assert saw_before == [[entry.id], [entry.id], [], []]  # exact: seen iff before the position
    d = repack(repo, target_bytes=256 * 1024)
    assert d["repointed"] == 1 and d["shards_after"] != d["shards_before"]
    fresh = Repo.open(repo.url)
    assert fresh.resolve("main") == tip
    resumed = _loader(fresh, ref=tip)
    resumed.load_state_dict(state)
    assert _ids(resumed) == full[30 * 500 :]
    assert [[e.id for e in lineage.checkpoints_that_saw(fresh, rid)] for rid in probe] == saw_before
    assert lineage.seen_record_ids(fresh, entry) == set(full[: 30 * 500])
