"""Core benchmark: commit, incremental commit, small commits, diff, log, open, add.

Run by hand (not a test): `.venv/bin/python benchmarks/bench_core.py [--records 1000000]`.
Every peer figure is measured in the same run on the same data (pyarrow's write_table).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataversion import Repo
from dataversion.records import make_text_records


def synthetic_texts(n: int, seed: int, size: int = 1000) -> pa.Array:
    """n distinct ~1 KB texts, fast to generate (random words + a unique counter)."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i:04d}" for i in range(5000)])
    per_doc = size // 6
    picks = words[rng.integers(0, len(words), size=(n, per_doc))]
    docs = [f"{seed}-{i} " + " ".join(row) for i, row in enumerate(picks)]
    return pa.array(docs, pa.large_string())


def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def timed(fn, *a, **kw):
    t = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--small-commits", type=int, default=1000)
    ap.add_argument("--files", type=int, default=20_000)
    args = ap.parse_args()
    n = args.records
    work = tempfile.mkdtemp(prefix="dv-bench-")
    rows = []
    try:
        print(
            f"# dataversion core benchmark: {platform.node()} {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"
        )
        texts = synthetic_texts(n, seed=1)

        # 1. full commit vs pyarrow write_table of the same table
        table = make_text_records(texts)
        _, t_pq = timed(pq.write_table, table, os.path.join(work, "peer.parquet"))
        repo = Repo.init(f"file://{work}/repo")
        t0 = time.perf_counter()
        res = repo.commit(make_text_records(texts), message="full")  # hashing included
        t_commit = time.perf_counter() - t0
        rows.append(
            (
                f"commit {n} ~1KB records (hashing incl.)",
                f"{n / t_commit:,.0f} rec/s",
                f"{t_pq / t_commit:.2f}x pyarrow.write_table ({n / t_pq:,.0f} rec/s)",
            )
        )
        full_commit = res.commit_id
        full_bytes = dir_bytes(os.path.join(work, "repo", "shards"))

        # 2. +1% incremental commit
        before = dir_bytes(os.path.join(work, "repo"))
        extra = synthetic_texts(n // 100, seed=2)
        res2, t_inc = timed(repo.commit, make_text_records(extra), message="+1%")
        written = dir_bytes(os.path.join(work, "repo")) - before
        rows.append(
            (
                "incremental +1% commit",
                f"{written / full_bytes:.4f} of snapshot bytes",
                f"{t_inc * 1000:.0f} ms",
            )
        )
        inc_commit = res2.commit_id

        # 4. diff 1M vs +1% (fresh process state: no caches)
        fresh = Repo.open(f"file://{work}/repo")
        d, t_diff = timed(fresh.diff, full_commit, inc_commit)
        assert d["added"] == n // 100 and d["removed"] == 0, d
        rows.append(
            ("diff full vs +1%", f"{t_diff * 1000:.1f} ms", f"{d['shards_read']} shard(s) read")
        )

        # 6. open an old commit and count its records
        fresh = Repo.open(f"file://{work}/repo")
        t0 = time.perf_counter()
        count = fresh.read_commit(fresh.resolve(full_commit[:12])).records.count
        t_open = time.perf_counter() - t0
        assert count == n
        rows.append(("open old commit + count records", f"{t_open * 1000:.2f} ms", ""))

        # 3. small commits: 10 records onto the big branch, many times
        lat = []
        small = synthetic_texts(10 * args.small_commits, seed=3, size=200).to_pylist()
        for i in range(args.small_commits):
            batch = make_text_records(small[10 * i : 10 * i + 10])
            t0 = time.perf_counter()
            repo.commit(batch, message=f"small {i}")
            lat.append(time.perf_counter() - t0)
        lat_ms = np.array(lat) * 1000
        first, last = lat_ms[: len(lat_ms) // 10], lat_ms[-len(lat_ms) // 10 :]
        rows.append(
            (
                f"small commit x{args.small_commits} (10 rec onto {n:,})",
                f"median {np.median(lat_ms):.2f} ms, p95 {np.percentile(lat_ms, 95):.2f} ms",
                f"first 10% median {np.median(first):.2f} ms, last 10% {np.median(last):.2f} ms",
            )
        )

        # 5. log over 1000+ commits (fresh process state)
        fresh = Repo.open(f"file://{work}/repo")
        log, t_log = timed(fresh.log, "main")
        rows.append(
            (
                f"log over {len(log)} commits",
                f"{t_log * 1000:.1f} ms",
                f"{fresh.store.stats['GET']} object reads",
            )
        )

        # 7. add 20,000 small files
        src = os.path.join(work, "files")
        for i in range(args.files):
            sub = os.path.join(src, f"d{i % 100:03d}")
            os.makedirs(sub, exist_ok=True)
            with open(os.path.join(sub, f"f{i:06d}.txt"), "w") as f:
                f.write(f"small file number {i} " + "x" * (i % 200))
        repo2 = Repo.init(f"file://{work}/repo2")
        r, t_add = timed(repo2.add, [src], message="files")
        assert r.added == args.files
        rows.append(
            (
                f"add {args.files:,} small files",
                f"{args.files / t_add:,.0f} files/s",
                f"{t_add:.2f} s",
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    for name, a, b in rows:
        print(f"{name:<{width}}  {a:<40} {b}")


if __name__ == "__main__":
    main()
