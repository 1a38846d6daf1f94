"""SnapshotLoader with remainder="drop": an epoch is finished once no full global batch is
left (the dropped tail is never consumed, so the position ends below num_records), and every
later pass, set_epoch, rank and resume treats it as finished, exactly as "pad" does at
num_records."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from dataversion import Repo  # noqa: E402
from dataversion.records import make_text_records  # noqa: E402
from dataversion.torch import SnapshotLoader, load_checkpoint, save_checkpoint  # noqa: E402

N = 1000  # batch 64: 15 full batches, 40 dropped ("drop") or a 16-sample last batch ("pad")
B = 64
WINDOW = 200
FULL = N // B


@pytest.fixture(scope="module")
def repo_url(tmp_path_factory) -> str:
    url = "file://" + str(tmp_path_factory.mktemp("remainder") / "repo")
    repo = Repo.init(url)
    texts = [f"record {i} " + "lorem ipsum " * (i % 7) for i in range(N)]
    repo.commit(make_text_records(texts, labels=[str(i % 3) for i in range(N)]), branch="main", message="one",
                target_shard_bytes=8 * 1024)
    return url


def loader(url, **kw) -> SnapshotLoader:
    kw.setdefault("batch_size", B)
    kw.setdefault("window", WINDOW)
    kw.setdefault("columns", ["label"])
    kw.setdefault("shuffle", True)
    kw.setdefault("seed", 1)
    kw.setdefault("num_workers", 0)
    return SnapshotLoader(url, **kw)


def ids_of(batches) -> list[str]:
    return [r for b in batches for r in b["record_id"]]


def epoch_ids(url, epoch: int, **kw) -> list[str]:
    """One epoch from a fresh loader: what every pass over that epoch must yield."""
    ld = loader(url, **kw)
    ld.set_epoch(epoch)
    return ids_of(ld)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_drop_every_pass_yields_the_full_batches(repo_url, num_workers):
    """The user's report: len 62, 62 batches, then len 0 and zero-length passes forever."""
    ref = epoch_ids(repo_url, 0, remainder="drop")
    assert len(ref) == FULL * B and len(set(ref)) == FULL * B
    ld = loader(repo_url, remainder="drop", num_workers=num_workers)
    for _pass in range(3):  # a plain `for epoch in range(E): for batch in loader:` loop
        assert len(ld) == FULL
        batches = list(ld)
        assert len(batches) == FULL and all(len(b["record_id"]) == B for b in batches)
        assert ids_of(batches) == ref  # no set_epoch: the same epoch again, from its start
        assert ld.position == FULL * B and ld.epoch == 0
    assert len(ld) == FULL  # the next pass, as after a "pad" epoch


def test_pad_passes_unchanged(repo_url):
    ld = loader(repo_url, remainder="pad")
    for _pass in range(3):
        assert len(ld) == FULL + 1
        assert sum(1 for _ in ld) == FULL + 1
        assert ld.position == N


@pytest.mark.parametrize("num_workers", [0, 2])
def test_drop_with_set_epoch(repo_url, num_workers):
    ld = loader(repo_url, remainder="drop", num_workers=num_workers)
    orders = []
    for epoch in range(3):
        ld.set_epoch(epoch)
        assert len(ld) == FULL
        got = ids_of(ld)
        assert got == epoch_ids(repo_url, epoch, remainder="drop")
        orders.append(got)
    assert len({tuple(o) for o in orders}) == 3
    # set_epoch of the epoch just finished starts it again, as with "pad" (position == n)
    for _ in range(2):
        ld.set_epoch(2)
        assert len(ld) == FULL
        assert ids_of(ld) == orders[2]


@pytest.mark.parametrize("world", [2, 3])
def test_drop_ranks_every_pass(repo_url, world):
    bs = 16
    step = bs * world
    lds = [loader(repo_url, remainder="drop", rank=r, world_size=world, batch_size=bs, num_workers=r % 2)
           for r in range(world)]
    for epoch in (0, 0, 1, 1):  # twice the same epoch without set_epoch in between, then set_epoch
        if epoch == 1 and lds[0].epoch == 0:
            for ld in lds:
                ld.set_epoch(1)
        assert {len(ld) for ld in lds} == {N // step}
        per_rank = [list(ld) for ld in lds]
        assert {len(p) for p in per_rank} == {N // step}  # every rank, the same steps
        seen = [i for p in per_rank for i in ids_of(p)]
        assert len(seen) == len(set(seen)) == N // step * step
        assert {ld.position for ld in lds} == {N // step * step}


@pytest.mark.parametrize("nw_a,nw_b", [(0, 0), (2, 1)])
def test_drop_resume_at_epoch_end_continues_as_uninterrupted(repo_url, tmp_path, nw_a, nw_b):
    """A checkpoint saved right after the last full batch: the resumed run goes on with the
    next epoch, and the whole sequence equals the uninterrupted run's."""
    epochs = 3
    ref = []
    ld = loader(repo_url, remainder="drop", num_workers=nw_a)
    for epoch in range(epochs):
        ld.set_epoch(epoch)
        ref += ids_of(ld)
    assert len(ref) == epochs * FULL * B

    ld = loader(repo_url, remainder="drop", num_workers=nw_a)
    ld.set_epoch(0)
    seen = ids_of(ld)
    state = ld.state_dict()
    assert (state["epoch"], state["position"]) == (0, FULL * B)  # the dropped tail is not consumed
    ckpt = str(tmp_path / "end.pt")
    save_checkpoint(ckpt, loader=ld)

    new = loader(repo_url, remainder="drop", num_workers=nw_b, seed=99)  # seed from the checkpoint
    load_checkpoint(ckpt, loader=new)
    assert len(new) == 0  # the restored epoch is finished: nothing of it is replayed
    for epoch in range(new.epoch, epochs):  # the usual loop, from the restored epoch
        new.set_epoch(epoch)
        seen += ids_of(new)
    assert seen == ref


def test_drop_resume_at_epoch_end_plain_passes(repo_url):
    """No set_epoch at all: the restored finished epoch yields nothing once (as "pad" does),
    then every pass is a full one again, never an endless run of empty passes."""
    ld = loader(repo_url, remainder="drop")
    first = ids_of(ld)
    state = ld.state_dict()
    for remainder, expect_after in (("drop", FULL), ("pad", FULL + 1)):
        new = loader(repo_url, remainder=remainder)
        st = dict(state, remainder=remainder) if remainder == "pad" else state
        if remainder == "pad":
            st["position"] = N  # the end of a "pad" epoch, for comparison
        new.load_state_dict(st)
        assert sum(1 for _ in new) == 0
        for _pass in range(2):
            assert len(new) == expect_after
            got = list(new)
            assert len(got) == expect_after
            if remainder == "drop":
                assert ids_of(got) == first


def test_drop_resume_mid_epoch_other_world_size_then_next_pass(repo_url):
    """Elastic: 2 ranks stop mid-epoch, 1 rank finishes it (its own full batches), then the
    next pass starts the epoch again instead of finding it 'unfinished'."""
    lds = [loader(repo_url, remainder="drop", rank=r, world_size=2, batch_size=32) for r in range(2)]
    its = [iter(x) for x in lds]
    for _ in range(4):
        for it in its:
            next(it)
    state = lds[0].state_dict()
    assert state["position"] == 4 * 64
    one = loader(repo_url, remainder="drop", batch_size=32)
    one.load_state_dict(state)
    one.set_epoch(0)
    rest = list(one)
    assert len(rest) == (N - 256) // 32 and one.position == 256 + (N - 256) // 32 * 32
    assert len(one) == N // 32
    assert ids_of(one) == epoch_ids(repo_url, 0, remainder="drop", batch_size=32)
