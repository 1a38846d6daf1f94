"""Lineage: entries from concurrent writers, pins through gc, exact "which checkpoints saw this
record" against real training runs, a lost repository, and the inspect/lineage/unpin CLI."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from dataversion import Repo  # noqa: E402
from dataversion.cli.lineage import inspect_command, lineage_command, unpin_command  # noqa: E402
from dataversion.records import make_text_records  # noqa: E402
from dataversion.repo import commit_key  # noqa: E402
from dataversion.torch import SnapshotLoader, load_checkpoint, save_checkpoint  # noqa: E402
from dataversion.training import lineage  # noqa: E402

ROOT = str(Path(__file__).resolve().parents[3])
N = 300


def _texts(n: int, tag: str = "") -> list[str]:
    return [f"{tag}lineage record {i} " + "x" * (i % 11) for i in range(n)]


def _make_repo(url: str, n: int = N, tag: str = "") -> Repo:
    repo = Repo.init(url)
    repo.commit(make_text_records(_texts(n, tag)), branch="main", message="one", target_shard_bytes=2 * 1024)
    return repo


@pytest.fixture(scope="module")
def shared_url(tmp_path_factory) -> str:
    url = "file://" + str(tmp_path_factory.mktemp("lineage") / "repo")
    repo = _make_repo(url)
    assert len(repo.shard_table(repo.read_packing(repo.resolve("main")))) > 4
    return url


def _loader(url, **kw):
    kw.setdefault("batch_size", 8)
    kw.setdefault("window", 64)
    kw.setdefault("columns", ["label"])
    kw.setdefault("num_workers", 0)
    return SnapshotLoader(url, **kw)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}


# --------------------------------------------------------------------------- writing
WRITER = textwrap.dedent(
    """
    import sys
    from dataversion import Repo
    from dataversion.training import lineage
    url, who, count, commit = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    repo = Repo.open(url)
    state = {"commit": commit, "seed": 0, "epoch": 0, "position": 0, "window": 64, "world_size": 1, "batch_size": 8}
    for i in range(count):
        lineage.record_checkpoint(repo, state, checkpoint=f"/ckpt/{who}.pt", run="shared-run" if i % 2 else who, step=i)
    """
)


def test_concurrent_writers_lose_no_entry(repo_url, tmp_path):
    repo = _make_repo(repo_url, n=20)
    commit = repo.resolve("main")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = [subprocess.Popen([sys.executable, str(script), repo_url, f"w{k}", "12", commit], env=_env()) for k in range(4)]
    assert all(p.wait(120) == 0 for p in procs)
    all_entries = lineage.entries(repo)
    assert len(all_entries) == 48 and len({e.id for e in all_entries}) == 48
    assert len(lineage.entries_of_run(repo, "shared-run")) == 24
    assert sorted(lineage.runs(repo)) == ["shared-run", "w0", "w1", "w2", "w3"]
    assert len(list(repo.store.list("pins/"))) == 48


def test_pins_keep_commits_through_gc_until_unpinned(tmp_path):
    url = "file://" + str(tmp_path / "repo")
    repo = _make_repo(url, n=40)
    repo.commit(make_text_records(_texts(10, "exp ")), branch="exp", message="experiment")
    exp = repo.resolve("exp")
    ld = _loader(url, ref="exp")
    next(iter(ld))
    ckpt = str(tmp_path / "ckpt.pt")
    meta = save_checkpoint(ckpt, loader=ld, run="exp-42", step=1)
    assert meta["lineage"]["commit"] == exp and meta["lineage"]["run"] == "exp-42"
    repo.delete_branch("exp")
    for info in list(repo.store.list("reflog/")):  # reflog expiry: nothing but the pin holds exp now
        repo.store.delete(info.key)
    repo.gc(grace_seconds=0)
    assert repo.store.exists(commit_key(exp))
    assert Repo.open(url).shard_table(Repo.open(url).read_packing(exp))  # still readable, shards included
    assert exp in repo.root_commits()
    # `dataversion unpin --run` releases it; gc then takes it and inspect says so clearly
    r = CliRunner().invoke(unpin_command, ["--run", "exp-42", "--repo", url, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["commits"] == [exp]
    assert [e["pinned"] for e in json.loads(CliRunner().invoke(lineage_command, ["--run", "exp-42", "--repo", url, "--json"]).output)] == [False]
    repo.gc(grace_seconds=0)
    assert not repo.store.exists(commit_key(exp))
    r = CliRunner().invoke(inspect_command, [ckpt, "--json"])
    assert r.exit_code == 3 and "no longer exists" in r.output and exp in r.output
    # a lineage query over entries whose commit is gone still answers (nothing seen there)
    assert lineage.checkpoints_that_saw(repo, "0" * 32) == []


def test_record_false_other_ranks_and_lost_repository(tmp_path):
    url = "file://" + str(tmp_path / "repo")
    repo = _make_repo(url, n=40)
    ld = _loader(url)
    next(iter(ld))
    save_checkpoint(str(tmp_path / "a.pt"), loader=ld, run="r", record=False)
    rank1 = _loader(url, rank=1, world_size=2)
    assert save_checkpoint(str(tmp_path / "b.pt"), loader=rank1, run="r")["lineage"] is None
    save_checkpoint(str(tmp_path / "c.pt"), model={"w": torch.ones(1)}, run="r")  # no loader: nothing to record
    assert lineage.entries(repo) == []
    # the repository disappears (unmounted volume): the checkpoint is still written, with a warning
    shutil.move(str(tmp_path / "repo"), str(tmp_path / "moved"))
    (tmp_path / "repo").write_text("not a directory any more")
    ckpt = str(tmp_path / "d.pt")
    with pytest.warns(RuntimeWarning, match="lineage entry was NOT recorded"):
        meta = save_checkpoint(ckpt, loader=ld, run="r", step=7, model={"w": torch.ones(3)})
    assert meta["lineage"] is None
    ld2 = _loader(url="file://" + str(tmp_path / "moved"))
    states = load_checkpoint(ckpt, loader=ld2)
    assert torch.equal(states["model"]["w"], torch.ones(3)) and ld2.position == ld.position == 8


def test_lost_s3_repository_still_writes_checkpoint(s3_env, tmp_path):
    url = f"s3://{s3_env.new_bucket()}/repo"
    _make_repo(url, n=30)
    ld = _loader(url)
    next(iter(ld))
    import urllib3

    from dataversion.stores.s3 import S3Store

    dead = S3Store(ld.repo.store.bucket, "repo")
    dead.client._base_url._url = dead.client._base_url._url._replace(netloc="127.0.0.1:9")  # nothing listens there
    dead.client._http = urllib3.PoolManager(retries=False)  # fail at once (the SDK's retries take ~30 s)
    ld.dataset.repo = Repo(dead)
    ckpt = str(tmp_path / "s3lost.pt")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        save_checkpoint(ckpt, loader=ld, run="r")
    assert any("NOT recorded" in str(x.message) for x in w)
    assert os.path.getsize(ckpt) > 0


# --------------------------------------------------------------------------- seen-by, exact
TRAIN = textwrap.dedent(
    """
    import json, sys
    from dataversion.torch import SnapshotLoader, save_checkpoint
    url, out, world, remainder, run = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    loaders = [SnapshotLoader(url, batch_size=8, window=64, columns=["label"], rank=r, world_size=world,
                              remainder=remainder, num_workers=2 if r == 0 else 1, seed=5) for r in range(world)]
    step = 0
    log = open(out, "w")
    for epoch in range(2):
        for ld in loaders:
            ld.set_epoch(epoch)
        for batches in zip(*loaders):   # the ranks, in lockstep
            step += 1
            log.write(json.dumps({"step": step, "ids": [i for b in batches for i in b["record_id"]]}) + "\\n")
            if step % 3 == 0:
                for r, ld in enumerate(loaders):   # every rank saves; only rank 0 records
                    save_checkpoint(f"{out}.rank{r}.pt", loader=ld, run=run, step=step)
    log.close()
    """
)


@pytest.mark.parametrize("world,remainder", [(2, "pad"), (3, "drop")])
def test_seen_by_record_is_exact_against_a_training_run(shared_url, tmp_path, world, remainder):
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    out = tmp_path / "consumed.jsonl"
    run = f"exact-{world}-{remainder}"
    proc = subprocess.run([sys.executable, str(script), shared_url, str(out), str(world), remainder, run],
                          env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged = [json.loads(line) for line in out.read_text().splitlines()]
    repo = Repo.open(shared_url)
    found = lineage.entries_of_run(repo, run)
    assert [e.step for e in found] == [s for s in range(3, len(logged) + 1, 3)]  # rank 0 only
    assert {e.world_size for e in found} == {world}
    assert all(e.checkpoint.endswith(".rank0.pt") for e in found)
    seen_at: dict[int, set[str]] = {}
    acc: set[str] = set()
    for rec in logged:
        acc |= set(rec["ids"])
        seen_at[rec["step"]] = set(acc)
    epochs = {e.epoch for e in found}
    assert epochs == {0, 1}
    for e in found:  # "which data did this checkpoint see": the whole set, exactly
        assert lineage.seen_record_ids(repo, e) == seen_at[e.step], e
    if remainder == "drop":  # the dropped tail makes epoch-1 answers non-trivial
        assert any(len(seen_at[e.step]) < N for e in found if e.epoch == 1)
    all_ids = sorted(set().union(*seen_at.values()) | set(_all_ids(repo)))
    rng = random.Random(world)
    sample = rng.sample(all_ids, 25) + [logged[0]["ids"][0], logged[-1]["ids"][-1]]
    for rid in sample:  # "which checkpoints saw this record": by the pure order, exactly
        got = [e.id for e in lineage.checkpoints_that_saw(repo, rid) if e.run == run]
        want = [e.id for e in found if rid in seen_at[e.step]]
        assert got == want, rid


def _all_ids(repo: Repo) -> list[str]:
    return [r["record_id"] for r in repo.ls("main", columns=("record_id",))]


def test_seen_follows_a_run_across_a_commit_switch(tmp_path):
    url = "file://" + str(tmp_path / "repo")
    repo = _make_repo(url, n=60)
    first = repo.resolve("main")
    ld = _loader(url)
    for epoch in range(2):
        ld.set_epoch(epoch)
        for _ in ld:
            pass
    save_checkpoint(str(tmp_path / "a.pt"), loader=ld, run="sw", step=1)
    repo.commit(make_text_records(_texts(30, "second ")), branch="main", message="more")
    ld2 = _loader(url)
    ld2.set_epoch(2)
    it = iter(ld2)
    b = next(it)
    e = lineage.LineageEntry.from_dict(save_checkpoint(str(tmp_path / "b.pt"), loader=ld2, run="sw", step=2)["lineage"])
    new_ids = [r["record_id"] for r in repo.ls("main", columns=("record_id",))]
    old = set(_all_ids_of(repo, first))
    fresh = [r for r in new_ids if r not in old]
    unseen_fresh = [r for r in fresh if r not in b["record_id"]]
    assert unseen_fresh  # records new in the second commit, not consumed yet
    seen = lineage.seen_record_ids(repo, e)
    assert old <= seen and set(b["record_id"]) <= seen and not set(unseen_fresh) & seen
    assert [x.step for x in lineage.checkpoints_that_saw(repo, unseen_fresh[0])] == []
    assert [x.step for x in lineage.checkpoints_that_saw(repo, sorted(old)[0])] == [1, 2]


def _all_ids_of(repo: Repo, commit: str) -> list[str]:
    return [r["record_id"] for r in repo.ls(commit, columns=("record_id",))]


# --------------------------------------------------------------------------- CLI
def test_cli_shapes_and_errors(tmp_path):
    url = "file://" + str(tmp_path / "repo")
    repo = _make_repo(url, n=50)
    commit = repo.resolve("main")
    ld = _loader(url)
    it = iter(ld)
    first = next(it)
    ckpt = str(tmp_path / "run" / "last.pt")
    save_checkpoint(ckpt, loader=ld, run="exp-42", step=1, model={"w": torch.zeros(2)})
    next(it)
    save_checkpoint(ckpt, loader=ld, run="exp-42", step=2, model={"w": torch.zeros(2)})
    runner = CliRunner()

    r = runner.invoke(inspect_command, [ckpt, "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert {"commit", "seed", "epoch", "position", "run", "step", "world_size", "saved_at", "sha256"} <= d.keys()
    assert (d["commit"], d["run"], d["step"], d["position"], d["epoch"]) == (commit, "exp-42", 2, 16, 0)
    assert d["pinned"] and len(d["recorded"]) == 1 and d["states"] == ["model"]
    assert runner.invoke(inspect_command, [ckpt]).exit_code == 0

    keys = {"run", "step", "commit", "epoch", "position", "checkpoint", "saved_at"}
    for args in (["main"], ["--run", "exp-42"], ["--record", first["record_id"][0]], []):
        r = runner.invoke(lineage_command, [*args, "--repo", url, "--json"])
        assert r.exit_code == 0, (args, r.output)
        rows = json.loads(r.output)
        assert isinstance(rows, list) and [x["step"] for x in rows] == [1, 2], args
        assert all(keys <= x.keys() and x["checkpoint"] == os.path.abspath(ckpt) for x in rows)
    unseen = [i for i in _all_ids(repo) if i not in set(first["record_id"])]
    r = runner.invoke(lineage_command, ["--record", unseen[0], "--repo", url, "--json"])
    assert r.exit_code == 0 and isinstance(json.loads(r.output), list)
    repo.commit(make_text_records(_texts(5, "new ")), branch="main", message="two")
    r = runner.invoke(lineage_command, ["main", "--repo", url, "--json"])
    assert r.exit_code == 0 and json.loads(r.output) == []  # empty list, not an error
    assert len(json.loads(runner.invoke(lineage_command, ["main~1", "--repo", url, "--json"]).output)) == 2

    r = runner.invoke(lineage_command, ["--run", "nope", "--repo", url, "--json"])
    assert r.exit_code == 3 and "unknown run 'nope'" in r.output and "exp-42" in r.output
    r = runner.invoke(lineage_command, ["--record", "xyz", "--repo", url])
    assert r.exit_code == 2 and "invalid record id" in r.output
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(300))
    r = runner.invoke(inspect_command, [str(junk), "--json"])
    assert r.exit_code == 2 and "not a checkpoint" in r.output and "Traceback" not in r.output
    plain = tmp_path / "plain.pt"
    torch.save({"model": torch.ones(1)}, plain)
    r = runner.invoke(inspect_command, [str(plain)])
    assert r.exit_code == 2 and "not a dataversion checkpoint" in r.output
    assert runner.invoke(inspect_command, [str(tmp_path / "missing.pt")]).exit_code == 3
    assert runner.invoke(unpin_command, ["--repo", url]).exit_code == 2
    assert runner.invoke(unpin_command, ["--run", "nope", "--repo", url]).exit_code == 3

    r = runner.invoke(unpin_command, ["--checkpoint", ckpt, "--repo", url, "--json"])
    assert r.exit_code == 0 and len(json.loads(r.output)["unpinned"]) == 2
    assert not json.loads(runner.invoke(inspect_command, [ckpt, "--json"]).output)["pinned"]


def test_inspect_s3_checkpoint(s3_env, tmp_path):
    bucket = s3_env.new_bucket()
    url = f"s3://{bucket}/repo"
    _make_repo(url, n=30)
    ld = _loader(url)
    next(iter(ld))
    ckpt = f"s3://{bucket}/ckpts/exp/last.pt"
    save_checkpoint(ckpt, loader=ld, run="exp-s3", step=3)
    r = CliRunner().invoke(inspect_command, [ckpt, "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["checkpoint"] == ckpt and d["step"] == 3 and d["commit"] == ld.commit_id and d["pinned"]
    rows = json.loads(CliRunner().invoke(lineage_command, ["--run", "exp-s3", "--repo", url, "--json"]).output)
    assert [x["checkpoint"] for x in rows] == [ckpt]
    r = CliRunner().invoke(inspect_command, [f"s3://{bucket}/ckpts/none.pt"])
    assert r.exit_code == 3
