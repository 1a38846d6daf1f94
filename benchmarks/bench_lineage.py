"""Lineage benchmark: the cost of recording a checkpoint, and "which checkpoints saw this record".

    python benchmarks/bench_lineage.py [--records 1000000] [--checkpoints 100] [--saves 50] [--no-s3]

1. ms per `save_checkpoint` (loader state only) with `record=False` and with lineage recorded
   (the default), checkpoint on local disk, repository on local disk and on a SeaweedFS S3
   server started here like tests/conftest.py does (skipped with a note if `weed` is missing).
2. `checkpoints_that_saw(record)` on a commit of N records with K recorded checkpoints
   (10 runs, seeds and epochs mixed, positions spread over the epoch); also the full
   "which records did this checkpoint see" mask for one checkpoint.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataversion import Repo  # noqa: E402
from dataversion.records import make_text_records  # noqa: E402
from dataversion.training import lineage  # noqa: E402


def _commit(url: str, n: int, shard_bytes: int | None = None) -> Repo:
    repo = Repo.init(url)
    kw = {"target_shard_bytes": shard_bytes} if shard_bytes else {}
    repo.commit(make_text_records([f"r{i}" for i in range(n)]), branch="main", message="bench", **kw)
    return repo


def bench_save(url: str, ckpt_dir: str, saves: int) -> dict[str, float]:
    from dataversion.torch import SnapshotLoader, save_checkpoint

    loader = SnapshotLoader(url, batch_size=32, columns=["label"], cache=None)
    it = iter(loader)
    next(it)
    out = {}
    for label, record in (("record=False", False), ("recorded", None)):
        times = []
        for i in range(saves):
            t = time.perf_counter()
            save_checkpoint(os.path.join(ckpt_dir, "last.pt"), loader=loader, run="bench", step=i, record=record)
            times.append((time.perf_counter() - t) * 1000)
        out[label] = statistics.median(times)
    out["overhead"] = out["recorded"] - out["record=False"]
    return out


def _start_s3(workdir: Path):
    sys.path.insert(0, str(ROOT / "tests"))
    import conftest  # the test suite's SeaweedFS starter

    weed = conftest.find_weed()
    if weed is None:
        return None, None
    proc, server, ports = conftest._start_weed(weed, workdir)
    os.environ.update(AWS_ENDPOINT_URL=server.endpoint, AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key)
    return (proc, ports, conftest), server


def bench_query(n: int, k: int, workdir: str) -> dict[str, float]:
    url = "file://" + os.path.join(workdir, "big")
    t = time.perf_counter()
    repo = _commit(url, n)
    build = time.perf_counter() - t
    commit = repo.resolve("main")
    rng = random.Random(0)
    per_run = -(-k // 10)
    for r in range(10):  # 10 runs, each moving forward through up to 3 epochs
        marks = sorted(rng.randrange(3 * n) for _ in range(per_run))
        world = rng.choice([1, 2, 4])
        for j, m in enumerate(marks[: k - r * per_run]):
            state = {"commit": commit, "seed": r, "epoch": m // n, "position": m % n, "window": 16384,
                     "world_size": world, "batch_size": 256, "remainder": "pad", "shuffle": True}
            lineage.record_checkpoint(repo, state, checkpoint=f"/ckpts/run-{r}/step{j}.pt", run=f"run-{r}", step=j)
    raw = lineage._CommitIndex(repo, commit).all_ids().tobytes().hex()
    ids = [raw[32 * i : 32 * i + 32] for i in rng.sample(range(n), 5)]
    times, hits = [], []
    for rid in ids:
        fresh = Repo.open(url)  # cold: no cached packing
        t = time.perf_counter()
        hits.append(len(lineage.checkpoints_that_saw(fresh, rid)))
        times.append(time.perf_counter() - t)
    # cross-check against the loader's own consumed_matrix (runs move forward, remainder "pad")
    from dataversion.training.order import consumed_matrix

    all_entries = lineage.entries(repo)
    from dataversion.training.blocks import block_sizes

    sizes = list(block_sizes(repo, commit))
    matrix = consumed_matrix(sizes, [e.to_dict() for e in all_entries])
    index = lineage._CommitIndex(repo, commit)
    for rid, got in zip(ids, hits):
        assert got == int(matrix[:, index.flat_index(rid)].sum()), (rid, got)
    entry = lineage.entries(repo, run="run-3")[0]
    t = time.perf_counter()
    mask = lineage.records_seen(Repo.open(url), entry)
    full = time.perf_counter() - t
    return {"build_s": build, "query_s_median": statistics.median(times), "query_s_max": max(times),
            "hits": hits, "one_checkpoint_mask_s": full, "mask_seen": int(sum(m.sum() for m in mask.values()))}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--checkpoints", type=int, default=100)
    p.add_argument("--saves", type=int, default=50)
    p.add_argument("--no-s3", action="store_true")
    a = p.parse_args()
    os.environ.setdefault("DATAVERSION_CACHE_DIR", tempfile.mkdtemp(prefix="bench-lineage-cache-"))
    with tempfile.TemporaryDirectory(prefix="bench-lineage-") as tmp:
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {time.strftime('%Y-%m-%d')}")
        local = "file://" + os.path.join(tmp, "small")
        _commit(local, 20_000)
        r = bench_save(local, os.path.join(tmp, "ck"), a.saves)
        print(f"save_checkpoint, local repo:  {r['record=False']:.2f} ms without lineage, {r['recorded']:.2f} ms recorded "
              f"(+{r['overhead']:.2f} ms)")
        if not a.no_s3:
            started, server = _start_s3(Path(tmp))
            if server is None:
                print("save_checkpoint, S3 repo: skipped (SeaweedFS `weed` not installed)")
            else:
                try:
                    s3url = f"s3://{server.new_bucket()}/repo"
                    _commit(s3url, 20_000)
                    r = bench_save(s3url, os.path.join(tmp, "ck3"), a.saves)
                    print(f"save_checkpoint, S3 repo (SeaweedFS, loopback): {r['record=False']:.2f} ms without lineage, "
                          f"{r['recorded']:.2f} ms recorded (+{r['overhead']:.2f} ms)")
                finally:
                    proc, ports, conftest = started
                    conftest._stop(proc)
                    conftest._remove_unix_sockets(ports)
        q = bench_query(a.records, a.checkpoints, tmp)
        print(f"checkpoints_that_saw(record), {a.records:,} records, {a.checkpoints} checkpoints: "
              f"median {q['query_s_median']:.3f} s, max {q['query_s_max']:.3f} s (cold repo; target < 2 s); hits {q['hits']}")
        print(f"records_seen(one checkpoint), {a.records:,} records: {q['one_checkpoint_mask_s']:.3f} s "
              f"({q['mask_seen']:,} seen); building the commit took {q['build_s']:.1f} s")


if __name__ == "__main__":
    main()
