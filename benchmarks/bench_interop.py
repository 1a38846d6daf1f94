"""Interop benchmark: a full read of one commit through `dv://` vs the same shards straight
from disk, for pyarrow.dataset, pandas and DuckDB (target: dv:// >= 0.8x direct).

Run by hand (not a test): `.venv/bin/python benchmarks/bench_interop.py [--records 300000]`.
Each dv:// read uses a fresh filesystem instance (nothing cached: every shard is read and
hashed against its id before it is served). The direct read opens the shard files by path,
verifying nothing. Best of --repeat runs each, run alternately; the OS page cache is warm for both.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fsspec  # noqa: E402
import pyarrow.dataset as ds  # noqa: E402
from bench_core import synthetic_texts  # noqa: E402

import dataversion.interop.fsspec  # noqa: E402,F401 - registers dv://
from dataversion import Repo  # noqa: E402
from dataversion.records import make_text_records  # noqa: E402
from dataversion.shards import shard_key  # noqa: E402


def best_interleaved(a, b, repeat: int) -> tuple[float, object, float, object]:
    """Best time of each of two readers, run alternately (the machine's load hits both)."""
    ta, tb, out_a, out_b = [], [], None, None
    for _ in range(repeat):
        for fn, times in ((a, ta), (b, tb)):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
            if fn is a:
                out_a = out
            else:
                out_b = out
    return min(ta), out_a, min(tb), out_b


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="dv-bench-interop-")
    try:
        url = f"file://{work}/repo"
        repo = Repo.init(url)
        repo.commit(make_text_records(synthetic_texts(args.records, seed=3)), message="bench")
        commit = repo.resolve("main")
        shards = repo.shard_table(repo.read_packing(commit))
        paths = [repo.store.local_path(shard_key(s.id)) for s in shards]
        total = sum(s.size for s in shards)
        print(f"# dataversion interop benchmark: {platform.node()} {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
        print(f"# {args.records:,} records, {len(shards)} shards, {total / 2**20:.0f} MiB of Parquet; best of {args.repeat}")

        def fresh():
            return fsspec.filesystem("dv", repo=url, skip_instance_cache=True)

        def duck(source, fs=None):
            import duckdb

            con = duckdb.connect()
            if fs is not None:
                con.register_filesystem(fs)
            return con.sql(f"SELECT count(*), sum(length(text)) FROM read_parquet({source})").fetchall()[0][0]

        import pandas as pd

        plist = "[" + ", ".join(f"'{p}'" for p in paths) + "]"
        cases = [
            ("pyarrow.dataset", lambda: ds.dataset(paths, format="parquet").to_table().num_rows,
             lambda: ds.dataset(commit, filesystem=fresh(), format="parquet").to_table().num_rows),
            ("pandas.read_parquet", lambda: len(pd.read_parquet(paths)),
             lambda: len(pd.read_parquet(f"dv://{commit}/", storage_options={"repo": url, "skip_instance_cache": True}))),
            ("duckdb read_parquet", lambda: duck(plist),
             lambda: duck(f"'dv://{commit}/*.parquet'", fresh())),
        ]
        print(f"{'reader':<22}{'direct MiB/s':>14}{'dv:// MiB/s':>14}{'dv/direct':>11}")
        for name, direct, via_dv in cases:
            try:
                td, nd, tv, nv = best_interleaved(direct, via_dv, args.repeat)
            except ImportError as e:
                print(f"{name:<22} skipped: {e}")
                continue
            assert nd == nv == args.records, (name, nd, nv)
            print(f"{name:<22}{total / 2**20 / td:>14,.0f}{total / 2**20 / tv:>14,.0f}{td / tv:>10.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
