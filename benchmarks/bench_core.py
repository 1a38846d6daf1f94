"""Core benchmark: commit, incremental commit, small commits, diff, log, open, add, and the
store byte/request accounting of the operations that must cost the change (core v2).

Run by hand (not a test): `.venv/bin/python benchmarks/bench_core.py [--records 1000000]
[--accounting 100000,1000000] [--only-accounting]`. Every peer figure is measured in the same
run on the same data (pyarrow's write_table; Lance with stable row ids and Delta with change
data feed when `import lance, deltalake` works, e.g. PYTHONPATH=/tmp/peers).
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
from dataversion.tree import NODE_CACHE


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
    ap.add_argument("--accounting", default="100000,1000000", help="snapshot sizes for the accounting table")
    ap.add_argument("--only-accounting", action="store_true")
    args = ap.parse_args()
    if args.only_accounting:
        accounting([int(x) for x in args.accounting.split(",") if x])
        return
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
        NODE_CACHE.clear()  # the tree nodes the commits just wrote
        fresh = Repo.open(f"file://{work}/repo")
        d, t_diff = timed(fresh.diff, full_commit, inc_commit)
        assert d["added"] == n // 100 and d["removed"] == 0, d
        rows.append(
            ("diff full vs +1%", f"{t_diff * 1000:.1f} ms", f"{fresh.store.stats['GET']} object reads")
        )

        # 6. open an old commit and count its records
        NODE_CACHE.clear()
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
        NODE_CACHE.clear()
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
    accounting([int(x) for x in args.accounting.split(",") if x])


# ------------------------------------------------------------------ store accounting (fresh process)
OP = r"""
import json, sys, time
import numpy as np
from dataversion import Repo
from dataversion.records import ids_as_numpy, make_text_records
url, op = sys.argv[1:3]
repo = Repo.open(url)
tip = repo.resolve("main")
t0 = time.perf_counter()
if op == "small_commit":
    repo.commit(make_text_records([f"bench small {time.time_ns()} {i}" for i in range(10)]), message="small")
elif op == "delete_one":
    repo.commit(None, remove_ids=ids_as_numpy(make_text_records(["r 12345"]).column("record_id")), message="rm")
elif op == "contains":
    ids = ids_as_numpy(make_text_records([f"r {i}" for i in range(0, 100_000, 100)]).column("record_id"))
    assert repo.contains(tip, ids).sum() >= 1
elif op == "diff":
    d = repo.diff("main~1", "main")
    assert d["added"] + d["removed"] >= 1
ms = (time.perf_counter() - t0) * 1000
st = repo.store.stats
print(json.dumps({"ms": ms, "get": st["GET"], "get_bytes": st["GET_BYTES"], "put": st["PUT"], "put_bytes": st["PUT_BYTES"]}))
"""


def _fresh(url: str, op: str) -> dict:
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", OP, url, op], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _peers_available() -> bool:
    try:
        import deltalake  # noqa: F401
        import lance  # noqa: F401
    except ImportError:
        return False
    return True


def _peer_figures(work: str, n: int) -> dict[str, dict[str, float]]:
    """Lance (stable row ids) and Delta (change data feed) on the same ids-only records:
    delete one row and append 10 rows, timed (bytes written from the directory size)."""
    import deltalake
    import lance

    from dataversion.records import make_text_records as mk

    out: dict[str, dict[str, float]] = {}
    base = mk([f"r {i}" for i in range(n)]).select(["record_id", "modality", "text"])
    base = base.set_column(0, "record_id", pa.array(base.column("record_id").to_pylist(), pa.binary()))
    small = mk([f"peer small {i}" for i in range(10)]).select(["record_id", "modality", "text"])
    small = small.set_column(0, "record_id", pa.array(small.column("record_id").to_pylist(), pa.binary()))
    target = base.column("record_id")[12345].as_py()
    lp = os.path.join(work, f"lance-{n}")
    lance.write_dataset(base, lp, enable_stable_row_ids=True)
    b0 = dir_bytes(lp)
    t = time.perf_counter()
    lance.write_dataset(small, lp, mode="append")
    out.setdefault("lance", {})["small_commit_ms"] = (time.perf_counter() - t) * 1000
    out["lance"]["small_commit_written"] = dir_bytes(lp) - b0
    b0 = dir_bytes(lp)
    t = time.perf_counter()
    lance.dataset(lp).delete(f"record_id = X'{target.hex()}'")
    out["lance"]["delete_one_ms"] = (time.perf_counter() - t) * 1000
    out["lance"]["delete_one_written"] = dir_bytes(lp) - b0
    dp = os.path.join(work, f"delta-{n}")
    deltalake.write_deltalake(dp, base, configuration={"delta.enableChangeDataFeed": "true"})
    b0 = dir_bytes(dp)
    t = time.perf_counter()
    deltalake.write_deltalake(dp, small, mode="append")
    out.setdefault("delta", {})["small_commit_ms"] = (time.perf_counter() - t) * 1000
    out["delta"]["small_commit_written"] = dir_bytes(dp) - b0
    b0 = dir_bytes(dp)
    t = time.perf_counter()
    deltalake.DeltaTable(dp).delete(f"record_id = X'{target.hex()}'")
    out["delta"]["delete_one_ms"] = (time.perf_counter() - t) * 1000
    out["delta"]["delete_one_written"] = dir_bytes(dp) - b0
    return out


def accounting(sizes: list[int]) -> None:
    """Bytes and requests the store served, each operation in a fresh process, at each size;
    against the snapshot's id column (16 bytes x N)."""
    work = tempfile.mkdtemp(prefix="dv-bench-acct-")
    peers = _peers_available()
    print(f"\n# store accounting, fresh process per operation ({'with' if peers else 'without'} Lance/Delta peers)")
    print(f"{'N':>10}  {'operation':<14} {'ms':>8} {'GETs':>6} {'bytes read':>12} {'PUTs':>6} {'bytes written':>14} "
          f"{'read / id column':>17}  peers (same data, same run)")
    try:
        for n in sizes:
            url = f"file://{work}/acct-{n}"
            repo = Repo.init(url)
            repo.commit(make_text_records([f"r {i}" for i in range(n)]), message=f"{n} records")
            repo.commit(make_text_records(["r first small"]), message="so that main~1 exists")
            peer = _peer_figures(work, n) if peers else {}
            for op in ("small_commit", "delete_one", "contains", "diff"):
                f = _fresh(url, op)
                note = ""
                if op in ("small_commit", "delete_one") and peer:
                    note = "  ".join(f"{name} {p[op + '_ms']:.0f} ms, {p[op + '_written']:,} B written"
                                     for name, p in peer.items())
                print(f"{n:>10,}  {op:<14} {f['ms']:>8.1f} {f['get']:>6} {f['get_bytes']:>12,} {f['put']:>6} "
                      f"{f['put_bytes']:>14,} {f['get_bytes'] / (16 * n):>16.4%}  {note}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
