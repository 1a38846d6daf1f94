"""SnapshotLoader: pinning, exact resume (any num_workers), kill -9 resume, torchrun, bad input."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from dataversion import Repo  # noqa: E402
from dataversion.errors import CorruptObjectError, DataversionError, NotFoundError  # noqa: E402
from dataversion.records import make_text_records  # noqa: E402
from dataversion.shards import shard_key  # noqa: E402
from dataversion.torch import (  # noqa: E402
    SnapshotDataset,
    SnapshotLoader,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)

from .scripts import resumable_trainer  # noqa: E402

N = 1500
WINDOW = 200


def _texts(n: int, tag: str = "") -> list[str]:
    return [f"{tag}record {i} " + "lorem ipsum " * (i % 7) for i in range(n)]


@pytest.fixture(scope="module")
def repo_url(tmp_path_factory) -> str:
    url = "file://" + str(tmp_path_factory.mktemp("loader") / "repo")
    repo = Repo.init(url)
    repo.commit(make_text_records(_texts(N), labels=[str(i % 3) for i in range(N)]), branch="main", message="one", target_shard_bytes=8 * 1024)
    assert len(repo.shard_table(repo.read_packing(repo.resolve("main")))) > 8
    return url


def loader(url, **kw):
    kw.setdefault("batch_size", 32)
    kw.setdefault("window", WINDOW)
    kw.setdefault("columns", ["text", "label"])
    return SnapshotLoader(url, **kw)


def ids_of(batches) -> list[str]:
    return [r for b in batches for r in b["record_id"]]


def reference(url, epochs=(0,), **kw) -> list[str]:
    ld = loader(url, num_workers=0, **kw)
    out = []
    for e in epochs:
        ld.set_epoch(e)
        out += ids_of(ld)
    return out


def test_batches_have_record_ids_and_columns(repo_url):
    ld = loader(repo_url, num_workers=0)
    b = next(iter(ld))
    assert len(b["record_id"]) == 32 and all(isinstance(h, str) and len(h) == 32 for h in b["record_id"])
    assert set(b) == {"record_id", "text", "label"} and isinstance(b["text"][0], str)
    assert b.index == 0 and b.position == 32
    assert len(set(reference(repo_url))) == N


def test_order_independent_of_num_workers(repo_url):
    ref = reference(repo_url)
    for nw in (1, 2):
        assert ids_of(loader(repo_url, num_workers=nw)) == ref
    assert reference(repo_url, seed=1) != ref


def test_pinned_commit_and_checkpoint_refusal(repo_url, tmp_path):
    repo = Repo.open(repo_url)
    first = repo.resolve("main")
    ld = loader(repo_url, num_workers=0)
    assert ld.commit_id == first
    repo.commit(make_text_records(_texts(50, "new ")), branch="side", message="x")
    repo.create_branch("moving", "main")
    ld2 = loader(repo_url, ref="moving", num_workers=0)
    repo.commit(make_text_records(_texts(50, "later ")), branch="moving", message="two")
    assert ld2.commit_id == first and len(ids_of(ld2)) == N  # never sees the new commit
    it = iter(ld)
    next(it)
    ckpt = str(tmp_path / "c.pt")
    save_checkpoint(ckpt, loader=ld, model={"w": torch.ones(2)})
    other = loader(repo_url, ref="moving", num_workers=0)
    with pytest.raises(DataversionError) as e:
        load_checkpoint(ckpt, loader=other)
    assert first in str(e.value) and other.commit_id in str(e.value)
    with pytest.warns(RuntimeWarning):
        states = load_checkpoint(ckpt, loader=other, allow_dataset_change=True)
    assert torch.equal(states["model"]["w"], torch.ones(2))
    assert other.state_dict()["epoch"] == 0 and other.state_dict()["position"] == 0


@pytest.mark.parametrize("nw_a,nw_b", [(0, 0), (1, 1), (2, 2), (2, 0), (0, 2), (1, 2)])
def test_exact_resume(repo_url, tmp_path, nw_a, nw_b):
    ref = reference(repo_url, epochs=(0, 1))
    ld = loader(repo_url, num_workers=nw_a)
    seen = []
    ld.set_epoch(0)
    stop = 17 + nw_a
    for i, b in enumerate(ld):
        seen += b["record_id"]
        if i == stop:
            save_checkpoint(str(tmp_path / "c.pt"), loader=ld, step=i)
            break
    new = loader(repo_url, num_workers=nw_b, seed=123)  # the seed comes from the checkpoint
    load_checkpoint(str(tmp_path / "c.pt"), loader=new)
    for epoch in (0, 1):  # the usual loop: set_epoch(restored) keeps the position
        new.set_epoch(epoch)
        seen += ids_of(new)
    assert seen == ref


def test_resume_at_epoch_end_and_repeated_restarts(repo_url, tmp_path):
    ref = reference(repo_url, epochs=(0, 1))
    ld = loader(repo_url, num_workers=0)
    ld.set_epoch(0)
    seen = ids_of(ld)
    save_checkpoint(str(tmp_path / "c.pt"), loader=ld)
    for k in range(3):  # restart three times inside epoch 1
        ld = loader(repo_url, num_workers=k % 3)
        load_checkpoint(str(tmp_path / "c.pt"), loader=ld)
        for epoch in range(ld.epoch, 2):  # the training loop starts at the restored epoch
            ld.set_epoch(epoch)
            for i, b in enumerate(ld):
                seen += b["record_id"]
                if i == 4:
                    break
            save_checkpoint(str(tmp_path / "c.pt"), loader=ld)
    ld = loader(repo_url, num_workers=0)
    load_checkpoint(str(tmp_path / "c.pt"), loader=ld)
    ld.set_epoch(1)
    seen += ids_of(ld)
    assert seen == ref


def test_resume_is_o1(repo_url):
    ld = loader(repo_url, num_workers=0)
    st = ld.state_dict()
    st["position"] = int(N * 0.9)
    t = time.perf_counter()
    ld.load_state_dict(st)
    first = next(iter(ld))
    assert time.perf_counter() - t < 2.0
    assert first["record_id"] == reference(repo_url)[int(N * 0.9) : int(N * 0.9) + 32]


def test_elastic_resume_by_rank_arguments(repo_url):
    """2 -> 3 and 4 -> 2 ranks: the epoch continues with nothing repeated or skipped."""
    for before, after in ((2, 3), (4, 2)):
        seen = []
        lds = [loader(repo_url, num_workers=0, rank=r, world_size=before, batch_size=16) for r in range(before)]
        its = [iter(x) for x in lds]
        for _ in range(5):
            for it in its:
                seen += next(it)["record_id"]
        state = lds[0].state_dict()
        assert state["position"] == 5 * 16 * before and state["world_size"] == before
        for r in range(after):
            ld = loader(repo_url, num_workers=r % 2, rank=r, world_size=after, batch_size=16)
            ld.load_state_dict(state)
            ld.set_epoch(0)
            seen += ids_of(ld)
        pad = len(seen) - N
        assert 0 <= pad < after and len(set(seen)) == N


def test_missing_commit_is_an_error_at_construction(repo_url):
    with pytest.raises(NotFoundError):
        SnapshotLoader(repo_url, ref="no-such-branch")
    with pytest.raises(NotFoundError):
        SnapshotDataset(repo_url, ref="deadbeefdeadbeef")


def test_corrupt_shard_names_the_shard(tmp_path):
    url = "file://" + str(tmp_path / "repo")
    repo = Repo.init(url)
    repo.commit(make_text_records(_texts(300)), branch="main", target_shard_bytes=4 * 1024)
    shard = repo.shard_table(repo.read_packing(repo.resolve("main")))[0]
    path = repo.store.local_path(shard_key(shard.id))
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    with pytest.raises(CorruptObjectError) as e:
        ids_of(loader(url, num_workers=1, shuffle=False))
    assert shard.id in str(e.value)


TRAIN = resumable_trainer(
    loader='SnapshotLoader(url, batch_size=16, num_workers=2, window=200, columns=["text"])',
    log_line='f"{epoch} {\',\'.join(batch[\'record_id\'])}"',
    after_step="""
        if step % 5 == 0:
            save_checkpoint(ckpt, loader=loader, trainer={"step": step}, step=step)
    """,
)


def test_sigkill_at_random_step_resumes_exactly(repo_url, tmp_path, trainer):
    ref_log = tmp_path / "ref.log"
    assert trainer.start(TRAIN, repo_url, tmp_path / "ref.pt", ref_log).wait(120) == 0
    reference_lines = ref_log.read_text().splitlines()
    rng = random.Random(os.getpid())
    ckpt, logp = tmp_path / "run.pt", tmp_path / "run.log"
    for _kill in range(2):  # killed twice, at random steps after a checkpoint
        target = len(logp.read_text().splitlines()) + rng.randint(7, 40) if logp.exists() else rng.randint(7, 40)
        proc = trainer.start(TRAIN, repo_url, ckpt, logp, STEP_DELAY="0.01")
        trainer.wait_for_lines(logp, target, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # what the restart replays starts right after the checkpoint: cut the log there
        trainer.cut_log(logp, read_checkpoint(str(ckpt))["trainer"]["step"])
    assert trainer.start(TRAIN, repo_url, ckpt, logp).wait(120) == 0
    assert logp.read_text().splitlines() == reference_lines


DIST = textwrap.dedent(
    """
    import os, sys
    import torch.distributed as dist
    from dataversion.torch import SnapshotLoader
    dist.init_process_group("gloo")
    url, out = sys.argv[1:3]
    loader = SnapshotLoader(url, batch_size=16, num_workers=1, window=200, columns=["label"])
    assert loader.dataset.world_size == dist.get_world_size() == 2
    steps = 0
    with open(f"{out}.{dist.get_rank()}", "w") as f:
        for batch in loader:
            f.write("\\n".join(batch["record_id"]) + "\\n")
            steps += 1
    t = __import__("torch").tensor([steps])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    assert t.item() == steps  # every rank takes the same number of steps
    dist.destroy_process_group()
    """
)


def test_torchrun_gloo_two_ranks(repo_url, tmp_path):
    script = tmp_path / "dist.py"
    script.write_text(DIST)
    out = tmp_path / "ids"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), repo_url, str(out)],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = Path(f"{out}.0").read_text().split()
    r1 = Path(f"{out}.1").read_text().split()
    assert len(r0) == len(r1)
    assert set(r0) | set(r1) == set(reference(repo_url)) and len(r0) + len(r1) - N < 2
