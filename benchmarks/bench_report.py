"""Report benchmark: `dataversion report` of a 1M-record commit (target: < 10 s, < 5 MB).

Run by hand (not a test): `.venv/bin/python benchmarks/bench_report.py [--records 1000000]`.
The commit looks like a large ingest run: texts of ~--text-bytes each with 200 labels, a
parent commit to report against, and rejects and duplicates attachments of 5% of the inputs
each. Peer figure: `dataversion ls --json` of the same commit (reads the metadata of every record).
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

import numpy as np  # noqa: E402
from bench_core import synthetic_texts  # noqa: E402

from dataversion import Repo  # noqa: E402
from dataversion.hashing import canonical_json  # noqa: E402
from dataversion.records import ids_as_numpy, ids_to_hex, make_text_records  # noqa: E402
from dataversion.report import write_report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--text-bytes", type=int, default=300)
    ap.add_argument("--keep", metavar="DIR", help="build the repository in DIR and keep it; "
                    "a later run with the same DIR reports on it without building again")
    args = ap.parse_args()
    n = args.records
    work = args.keep or tempfile.mkdtemp(prefix="dv-bench-report-")
    try:
        url = f"file://{work}/repo"
        built = os.path.exists(os.path.join(work, "repo"))
        repo = Repo.open(url) if built else Repo.init(url)
        rng = np.random.default_rng(5)
        t0 = time.perf_counter()
        if not built:
            build(repo, n, args.text_bytes, rng, work)
        build_s = time.perf_counter() - t0
        n_dups = n_rejects = n // 20
        out = os.path.join(work, "report.html")
        t = time.perf_counter()
        d = write_report(repo, "main", out, against="main~1")
        report_s = time.perf_counter() - t
        t = time.perf_counter()
        rows = sum(1 for _ in Repo.open(url).ls("main", columns=("record_id", "modality", "source", "label", "size")))
        ls_s = time.perf_counter() - t
        print(f"# dataversion report benchmark: {platform.node()} {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
        print(f"# {n:,} records of ~{args.text_bytes} B, {n_dups:,} duplicates, {n_rejects:,} rejects (built in {build_s:.0f} s)")
        print(f"{'what':<34}{'seconds':>10}{'size':>14}")
        print(f"{'dataversion report --against':<34}{report_s:>10.2f}{d['bytes'] / 2**20:>11.2f} MiB   (target < 10 s, < 5 MB)")
        print(f"{'peer: ls over every record':<34}{ls_s:>10.2f}{'':>14}   ({rows:,} rows)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def build(repo: Repo, n: int, text_bytes: int, rng, work: str) -> None:
    """Two commits: the first 90% of n records, then the last 10% as an ingest run would."""
    texts = synthetic_texts(n, seed=9, size=text_bytes)
    labels = [f"label{int(k)}" for k in rng.zipf(1.3, n) % 200]
    sources = [f"shard{i // 10000:04d}/doc{i}.txt" for i in range(n)]
    table = make_text_records(texts, sources=sources, labels=labels)
    cut = n * 9 // 10
    repo.commit(table.slice(0, cut), message="first 90%")
    kept = ids_to_hex(ids_as_numpy(table.column("record_id"))[: n // 20])
    dups = [{"source": f"dups/{i}.txt", "record_id": f"{i:032x}", "duplicate_of": kept[i % len(kept)],
             "kind": "near" if i % 3 else "exact"} for i in range(n // 20)]
    rejects = [{"source": f"bad/{i}.bin", "reason": ("empty_file", "invalid_utf8", "too_large")[i % 3],
                "message": "synthetic reject"} for i in range(n // 20)]
    repo.commit(table.slice(cut), message="last 10% (an ingest run)",
                counts={"inputs": n // 10 + 2 * (n // 20), "kept": n - cut, "duplicates": len(dups), "rejected": len(rejects)},
                provenance={"pipeline": "pipelines.ingest", "source": f"file://{work}/gone"},
                attachments={"duplicates": canonical_json(dups), "rejects": canonical_json(rejects)})


if __name__ == "__main__":
    main()
