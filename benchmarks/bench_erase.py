"""Erasure benchmark: erase one record from a branch of N records built by C commits.

Run by hand (not a test): `.venv/bin/python benchmarks/bench_erase.py [--records 1000000 --commits 100]`.
Prints the bytes the erasure wrote and its seconds beside the size of the repository
(what a full rewrite writes: Lance's delete + compaction + cleanup_old_versions and Delta's
delete + vacuum rewrite every file holding a deleted row, and drop every earlier version).
Lance and Delta are measured in the same run when `pylance` / `deltalake` are installed.
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

from dataversion import Repo
from dataversion.records import make_text_records


def synthetic_texts(n: int, seed: int, size: int = 1000) -> pa.Array:
    """n distinct ~1 KB texts (random words + a unique counter)."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i:04d}" for i in range(5000)])
    picks = words[rng.integers(0, len(words), size=(n, size // 6))]
    return pa.array([f"{seed}-{i} " + " ".join(row) for i, row in enumerate(picks)], pa.large_string())


def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def build(url: str, records: int, commits: int, keep: bool) -> tuple[Repo, str, list[pa.Table]]:
    repo = Repo.init(url)
    per = records // commits
    tables = []
    for c in range(commits):
        t = make_text_records(synthetic_texts(per, seed=c), sources=[f"c{c}/{i}.txt" for i in range(per)])
        repo.commit(t, message=f"commit {c}")
        if c == commits // 2:
            victim = t.column("record_id")[per // 2].as_py().hex()
        if keep:
            tables.append(t)
    return repo, victim, tables


def measure_lance(tables: list[pa.Table], victim: bytes, root: str) -> str:
    try:
        import lance
    except ImportError:
        return "lance: not installed (pylance); a delete + compaction + cleanup_old_versions rewrites every file holding the row and drops every earlier version"
    path = os.path.join(root, "lance")
    ds = None
    for t in tables:
        ds = lance.write_dataset(t.select(["record_id", "text"]), path, mode="append")
    t0 = time.perf_counter()
    before = dir_bytes(path)
    ds.delete(f"record_id = X'{victim.hex()}'")
    ds.optimize.compact_files()
    ds.cleanup_old_versions(older_than=__import__("datetime").timedelta(0))
    return f"lance: {time.perf_counter() - t0:.2f} s, {dir_bytes(path)} bytes left of {before} (earlier versions gone)"


def measure_delta(tables: list[pa.Table], victim: bytes, root: str) -> str:
    try:
        import deltalake
    except ImportError:
        return "delta: not installed (deltalake); delete + vacuum (retention check off) rewrites every file holding the row; earlier versions stay listed but unreadable"
    path = os.path.join(root, "delta")
    for t in tables:
        deltalake.write_deltalake(path, t.select(["record_id", "text"]), mode="append")
    dt = deltalake.DeltaTable(path)
    t0 = time.perf_counter()
    dt.delete(f"record_id = X'{victim.hex()}'")
    dt.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    return f"delta: {time.perf_counter() - t0:.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--commits", type=int, default=100)
    ap.add_argument("--peers", action="store_true", help="also measure Lance and Delta when installed")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="bench-erase-")
    try:
        url = "file://" + os.path.join(root, "repo")
        t0 = time.perf_counter()
        repo, victim, tables = build(url, args.records, args.commits, args.peers)
        built = time.perf_counter() - t0
        shard_bytes = dir_bytes(os.path.join(root, "repo", "shards"))
        total = dir_bytes(os.path.join(root, "repo"))
        print(f"machine: {platform.machine()} {os.cpu_count()} cpus; {args.records:,} records in {args.commits} commits "
              f"built in {built:.1f} s; repository {total:,} bytes ({shard_bytes:,} in shards)")
        t0 = time.perf_counter()
        report = Repo.open(url).erase([victim], reason="benchmark")
        secs = time.perf_counter() - t0
        added = dir_bytes(os.path.join(root, "repo")) - total
        print(f"dataversion erase: {secs:.2f} s, {report['bytes_written']:,} bytes written "
              f"({report['shards_rewritten']} shard(s) rewritten, {report['commits_repointed']} commit(s) re-pointed, "
              f"held by {len(report['commits'])} commit(s)) = {100 * report['bytes_written'] / shard_bytes:.2f} % of the shard bytes; "
              f"store grew by {added:,} bytes in all (shards + manifests + erasure record + denylist)")
        t0 = time.perf_counter()
        gc = Repo.open(url).gc()
        print(f"dataversion gc afterwards: {time.perf_counter() - t0:.2f} s, {gc['deleted']} object(s) deleted ({gc['bytes']:,} bytes)")
        print(f"full rewrite (what a table-format delete + compaction writes here): {shard_bytes:,} bytes")
        if args.peers:
            raw = bytes.fromhex(victim)
            print(measure_lance(tables, raw, root))
            print(measure_delta(tables, raw, root))
        else:
            print("peers: run with --peers to measure Lance/Delta (pylance, deltalake) when installed")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
