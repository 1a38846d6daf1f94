"""The pure order function: permutation, determinism, partition, elastic resume (no torch)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from dataversion.training.order import EpochOrder, RankPlan, consumed_mask, consumed_matrix

SIZES = (37, 0, 120, 64, 5, 99, 250, 1)  # uneven, with an empty shard
N = sum(SIZES)


def rank_stream(n, start, batch, world, rank, remainder="pad", workers=1):
    """Positions one rank yields, batch by batch, in the order a DataLoader returns them."""
    plan = RankPlan(n, start, batch, world, rank, remainder)
    per_worker = [list(plan.worker_batches(w, workers)) for w in range(workers)]
    out = []
    # torch's round-robin over workers: worker i%nw produces batch i
    for i in range(plan.num_batches):
        assert i in per_worker[i % workers]
        out.append(plan.batch_positions(i))
    return out, plan


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("window", [1, 7, 64, 10_000])
def test_epoch_is_a_permutation(shuffle, window):
    o = EpochOrder(SIZES, seed=3, epoch=1, shuffle=shuffle, window=window)
    full = o.full()
    assert sorted(full.tolist()) == list(range(N))
    # random access agrees with the full order, in any order of positions
    pos = np.random.default_rng(0).permutation(N)
    assert (o.flat_at(pos) == full[pos]).all()
    assert (o.positions_of()[full] == np.arange(N)).all()


def test_deterministic_and_seeded():
    a = EpochOrder(SIZES, seed=1, epoch=0).full()
    assert (a == EpochOrder(SIZES, seed=1, epoch=0).full()).all()
    assert not (a == EpochOrder(SIZES, seed=2, epoch=0).full()).all()
    assert not (a == EpochOrder(SIZES, seed=1, epoch=1).full()).all()
    assert (EpochOrder(SIZES, shuffle=False).full() == np.arange(N)).all()


def test_same_order_in_a_fresh_interpreter():
    """No hidden state (hash randomization, global RNG): another process computes the same."""
    code = f"from dataversion.training.order import EpochOrder; print(EpochOrder({SIZES!r}, seed=5, epoch=2, window=50).full()[:40].tolist())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(EpochOrder(SIZES, seed=5, epoch=2, window=50).full()[:40].tolist())


def test_window_bounds_displacement_and_reads_are_local():
    o = EpochOrder(SIZES, seed=0, epoch=0, window=32)
    full = o.full()
    # the k-th window of the order only holds samples of the k-th window of the shuffled concatenation
    conc = np.concatenate([np.arange(o.manifest_offsets[s], o.manifest_offsets[s] + SIZES[s]) for s in o.shard_order])
    for w in range(0, N, 32):
        assert set(full[w : w + 32]) == set(conc[w : w + 32])
    shard, row = o.flat_to_shard_row(full)
    assert (row >= 0).all() and all(row[i] < SIZES[shard[i]] for i in range(N))
    # shards_from lists every non-empty shard still needed, in read order
    assert set(o.shards_from(0)) == {i for i, s in enumerate(SIZES) if s}


@pytest.mark.parametrize("world,batch,workers", [(1, 16, 1), (1, 16, 3), (2, 10, 2), (3, 7, 1), (4, 8, 4)])
def test_each_sample_once_across_ranks_and_workers(world, batch, workers):
    o = EpochOrder(SIZES, seed=9, epoch=0, window=40)
    seen = []
    for r in range(world):
        stream, plan = rank_stream(N, 0, batch, world, r, "pad", workers)
        seen.append(np.concatenate(stream))
        assert plan.num_batches == RankPlan(N, 0, batch, world, 0).num_batches  # lockstep
    allpos = np.concatenate(seen)
    pad = len(allpos) - N
    assert pad < world and set(allpos.tolist()) == set(range(N))
    # the order a rank sees does not depend on num_workers
    a, _ = rank_stream(N, 0, batch, world, 0, "pad", 1)
    b, _ = rank_stream(N, 0, batch, world, 0, "pad", workers)
    assert all((x == y).all() for x, y in zip(a, b))
    assert sorted(o.flat_at(np.unique(allpos)).tolist()) == list(range(N))


def test_drop_remainder():
    plan = RankPlan(N, 0, 10, 3, 1, "drop")
    assert plan.num_batches == N // 30
    got = np.concatenate([np.concatenate([RankPlan(N, 0, 10, 3, r, "drop").batch_positions(i) for i in range(plan.num_batches)]) for r in range(3)])
    assert sorted(got.tolist()) == list(range(N - N % 30))
    assert plan.position_after(plan.num_batches - 1) == N - N % 30


def test_world_one_pad_is_a_short_last_batch():
    plan = RankPlan(N, 0, 100, 1, 0, "pad")
    assert len(plan.batch_positions(plan.num_batches - 1)) == N % 100
    assert plan.position_after(plan.num_batches - 1) == N


def _consume(n, start, batch, world, steps):
    """Global positions consumed by `steps` lockstep steps of every rank from `start`."""
    out = []
    for r in range(world):
        plan = RankPlan(n, start, batch, world, r)
        for i in range(min(steps, plan.num_batches)):
            out.append(plan.batch_positions(i))
    last = RankPlan(n, start, batch, world, 0)
    return np.concatenate(out) if out else np.empty(0, int), last.position_after(min(steps, last.num_batches) - 1)


@pytest.mark.parametrize("before,after", [(2, 3), (4, 2), (1, 4), (3, 1)])
def test_elastic_resume_repeats_and_skips_nothing(before, after):
    batch = 8
    first, pos = _consume(N, 0, batch, before, 5)
    assert pos == 5 * batch * before and sorted(first.tolist()) == list(range(pos))  # a prefix
    rest, end = _consume(N, pos, batch, after, 10**6)
    assert end == N
    both = np.concatenate([first, rest])
    pad = len(both) - N
    assert 0 <= pad < after
    assert set(both.tolist()) == set(range(N))
    assert len(set(rest.tolist()) & set(first.tolist())) == (0 if pad == 0 else len(set(rest[-pad:].tolist()) & set(first.tolist())))


def test_resume_same_world_is_the_uninterrupted_stream():
    full, _ = rank_stream(N, 0, 12, 2, 1)
    pos = RankPlan(N, 0, 12, 2, 1).position_after(6)
    resumed, _ = rank_stream(N, pos, 12, 2, 1)
    assert all((a == b).all() for a, b in zip(full[7:], resumed)) and len(full[7:]) == len(resumed)


def test_consumed_mask_and_matrix():
    o = EpochOrder(SIZES, seed=4, epoch=0, window=30)
    m = consumed_mask(SIZES, seed=4, epoch=0, position=100, window=30)
    assert m.sum() == 100 and set(np.flatnonzero(m)) == set(o.full()[:100].tolist())
    assert consumed_mask(SIZES, seed=4, epoch=1, position=0, window=30).all()
    mat = consumed_matrix(SIZES, [dict(seed=4, epoch=0, position=p) for p in (0, 100, N)] + [dict(seed=1, epoch=2, position=3)], window=30)
    assert mat.shape == (4, N) and mat.sum(1).tolist() == [0, 100, N, N]
    assert (mat[1] == m).all()


def test_consumed_matrix_is_fast_at_scale():
    import time

    sizes = [4096] * 244 + [576]  # 1,000,000 records
    cks = [dict(seed=i % 3, epoch=0, position=i * 9000) for i in range(100)]
    t = time.perf_counter()
    mat = consumed_matrix(sizes, cks)
    assert time.perf_counter() - t < 4.0  # < 2 s on an idle 2-core machine; slack for shared CI
    assert mat[7].sum() == 7 * 9000


def test_bad_arguments():
    with pytest.raises(ValueError):
        RankPlan(10, 0, 4, 2, 2)
    with pytest.raises(ValueError):
        RankPlan(10, 0, 4, 1, 0, "wrap")
    with pytest.raises(IndexError):
        EpochOrder((3,)).flat_at([3])
    assert len(EpochOrder(()).full()) == 0 and RankPlan(0, 0, 4).num_batches == 0


def test_order_and_cache_import_without_torch():
    code = "import sys, dataversion.training.order, dataversion.cache, dataversion.cli.cache; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_torch_free_training_modules_import_without_torch():
    # the CLI reads checkpoint bytes and lineage without torch
    modules = "dataversion.training.batches, dataversion.training.checkpoint, dataversion.training.lineage, dataversion.training.preemption"
    code = f"import sys, {modules}; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
