"""Shard encoding, chosen by measurement: bytes, write and read rates per candidate, beside Lance.

Run by hand (not a test):

    PYTHONPATH=. .venv/bin/python benchmarks/bench_encoding.py [--texts 200000] [--images 1500]
        [--audio 400] [--rounds 2] [--only text,corpus,image,audio,wav,ids] [--candidates A,B]

Data, the same for every candidate and for Lance:
- `text`: bench_core's synthetic ~1 KB texts (random words from a 5,000-word vocabulary: close
  to their order-0 entropy, so LZ codecs gain little on them: unrealistic, kept because the
  issue's figures use them),
- `corpus`: real English/technical prose, ~1 KB chunks (line-aligned, exact duplicates
  dropped) of this machine's /usr/share/common-licenses, /usr/share/doc/*/{copyright,
  changelog*, README*, *.md, *.txt*} and man pages, cut at several chunk sizes to reach
  --texts, shuffled (seed 0),
- `image`: JPEGs generated with Pillow (smooth random fields + noise, 256x256, quality 85),
- `audio`: FLAC clips generated with soundfile (2 s, 16 kHz, tones + noise); `wav`: the same
  clips as uncompressed PCM WAV (what a codec on the data column can still gain).

Per candidate (a `shards.ShardEncoding`): the bytes of the shards the writer would write
(`plan_shard_rows` cuts, `parquet_bytes`), the encode rate (rec/s), pyarrow's full read of
those shards (rec/s), a real `Repo.commit` (hashing included, rec/s) and one shuffled epoch
of the loader's read path (`SnapshotDataset`, arrow batches, file:// store read in place).
Lance (14, stable row ids) gets the same record table (insertion order): its directory
bytes, write and full read rates. Candidates and Lance are interleaved within each round;
figures are the best of the rounds (rates: the highest; on a shared machine the best of interleaved rounds
estimates the cost of the work itself), with the load average printed beside them. Also the record-id hash cost: ids/s of xxh3-128 and
BLAKE3 (16 bytes) over the same ~1 KB texts.

Lance is imported from /tmp/peers (appended to sys.path, so the venv's pyarrow stays first).
"""

from __future__ import annotations

import argparse
import glob
import gzip
import io
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.append(os.environ.get("PEERS", "/tmp/peers"))

from bench_core import synthetic_texts  # noqa: E402

from dataversion import Repo, shards  # noqa: E402
from dataversion.records import make_binary_records, make_text_records  # noqa: E402
from dataversion.shards import ShardEncoding, parquet_bytes, plan_shard_rows  # noqa: E402

TEXT_CANDIDATES = {
    "before (snappy)": shards.BEFORE_ENCODING,
    "zstd-1": ShardEncoding(text_codec="zstd", text_level=1, metadata_codec="zstd", metadata_level=1),
    "zstd-2": ShardEncoding(text_codec="zstd", text_level=2, metadata_codec="zstd", metadata_level=2),
    "zstd-3": ShardEncoding(text_codec="zstd", text_level=3, metadata_codec="zstd", metadata_level=3),
    "zstd-5": ShardEncoding(text_codec="zstd", text_level=5, metadata_codec="zstd", metadata_level=5),
    "zstd-3 rg16k": ShardEncoding(text_codec="zstd", text_level=3, metadata_codec="zstd", metadata_level=3,
                                  row_group_rows=16384),
    "chosen": shards.SHARD_ENCODING,
}
MEDIA_CANDIDATES = {
    "before (snappy)": shards.BEFORE_ENCODING,
    "data none": ShardEncoding(data_codec="none", metadata_codec="zstd", metadata_level=3),
    "data zstd-1": ShardEncoding(data_codec="zstd", data_level=1, metadata_codec="zstd", metadata_level=3),
    "data zstd-3": ShardEncoding(data_codec="zstd", data_level=3, metadata_codec="zstd", metadata_level=3),
    "chosen": shards.SHARD_ENCODING,
}


# ---------------------------------------------------------------------------------- data
def corpus_texts(n: int, seed: int = 0, size: int = 1000) -> pa.Array:
    """n distinct real-prose chunks of about `size` bytes (see the module docstring)."""
    pats = ["/usr/share/common-licenses/*", "/usr/share/doc/*/copyright", "/usr/share/doc/*/changelog*",
            "/usr/share/doc/*/*.md", "/usr/share/doc/*/*.txt*", "/usr/share/doc/*/README*",
            "/usr/share/man/man*/*.gz"]
    files = sorted({p for pat in pats for p in glob.glob(pat) if os.path.isfile(p)})
    docs = []
    for path in files:
        try:
            raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
        except (OSError, EOFError):
            continue
        docs.append(raw.decode("utf-8", "replace"))
    chunks: list[str] = []
    seen: set[str] = set()
    for target in (size, size * 7 // 10, size * 13 // 10, size // 2, size * 3 // 2):
        for doc in docs:
            buf: list[str] = []
            cur = 0
            for line in doc.splitlines(keepends=True):
                buf.append(line)
                cur += len(line)
                if cur >= target:
                    c = "".join(buf)
                    buf, cur = [], 0
                    if c not in seen:
                        seen.add(c)
                        chunks.append(c)
        if len(chunks) >= n:
            break
    order = np.random.default_rng(seed).permutation(len(chunks))[:n]
    return pa.array([chunks[i] for i in order], pa.large_string())


def jpeg_payloads(n: int, seed: int = 0) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        low = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((256, 256), Image.BICUBIC)
        arr = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, size=(256, 256, 3))
        buf = io.BytesIO()
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def flac_payloads(n: int, seed: int = 0, rate: int = 16000, seconds: float = 2.0, fmt: str = "FLAC") -> list[bytes]:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    out = []
    for _ in range(n):
        freqs = rng.uniform(100, 2000, size=3)
        wave = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) for f in freqs) / 4
        wave = wave + rng.normal(0, 0.05, size=len(t))
        buf = io.BytesIO()
        sf.write(buf, wave.astype(np.float32), rate, format=fmt, subtype="PCM_16")
        out.append(buf.getvalue())
    return out


# ---------------------------------------------------------------------------------- measures
def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def measure_candidate(table: pa.Table, enc: ShardEncoding, work: str, column: str, full: bool = True) -> dict:
    """Bytes, encode, pyarrow read, commit and loader-epoch rates of one encoding (without
    `full`: bytes, encode and pyarrow read only)."""
    n = table.num_rows
    order, cuts = plan_shard_rows(table)
    parts = [table.take(pa.array(order[a:b])) for a, b in cuts]
    t0 = time.perf_counter()
    blobs = [parquet_bytes(p, enc) for p in parts]
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    for b in blobs:
        pq.ParquetFile(pa.BufferReader(b)).read()
    t_read = time.perf_counter() - t0
    size = sum(len(b) for b in blobs)
    del blobs, parts
    if not full:
        return {"bytes": size, "encode": n / t_enc, "read": n / t_read, "commit": None, "loader": None}

    repo_dir = tempfile.mkdtemp(dir=work)
    saved = shards.SHARD_ENCODING
    shards.SHARD_ENCODING = enc  # what the writer encodes with (read at call time)
    try:
        repo = Repo.init(f"file://{repo_dir}")
        t0 = time.perf_counter()
        repo.commit(table, message="bench")
        t_commit = time.perf_counter() - t0
    finally:
        shards.SHARD_ENCODING = saved
    t_loader = loader_epoch(repo_dir, column)
    shutil.rmtree(repo_dir, ignore_errors=True)
    return {"bytes": size, "encode": n / t_enc, "read": n / t_read, "commit": n / t_commit, "loader": n / t_loader}


def loader_epoch(repo_dir: str, column: str) -> float:
    """Seconds for one shuffled epoch of the loader's read path (arrow batches, no workers)."""
    from dataversion.training.dataset import SnapshotDataset

    ds = SnapshotDataset(f"file://{repo_dir}", "main", batch_size=1024, columns=[column], format="arrow",
                         seed=0, cache="none")
    t0 = time.perf_counter()
    rows = 0
    for batch in ds:
        rows += len(batch)
    return time.perf_counter() - t0


def measure_lance(table: pa.Table, work: str) -> dict | None:
    try:
        import lance
    except ImportError:
        return None
    path = os.path.join(tempfile.mkdtemp(dir=work), "ds.lance")
    n = table.num_rows
    t0 = time.perf_counter()
    lance.write_dataset(table, path, enable_stable_row_ids=True)
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    lance.dataset(path).to_table()
    t_read = time.perf_counter() - t0
    size = dir_bytes(path)
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    return {"bytes": size, "encode": n / t_write, "read": n / t_read, "commit": n / t_write, "loader": None}


def id_rates(texts: pa.Array, rounds: int) -> dict[str, float]:
    """ids/s of each record-id hash over the same texts (Arrow buffers hashed in place)."""
    from dataversion.hashing import ID_HASHES
    from dataversion.records import text_record_ids

    out: dict[str, list[float]] = {h: [] for h in ID_HASHES}
    for _ in range(rounds):
        for h in ID_HASHES:  # interleaved
            t0 = time.perf_counter()
            text_record_ids(texts, id_hash=h)
            out[h].append(len(texts) / (time.perf_counter() - t0))
    return {h: max(v) for h, v in out.items()}


# ---------------------------------------------------------------------------------- report
def fmt_rate(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}"


def print_table(name: str, n: int, results: dict[str, dict], lance: dict | None, rounds: int) -> None:
    before = results["before (snappy)"]
    print(f"\n## {name}: {n:,} records, {before['raw'] / n:,.0f} B payload each (best of {rounds} interleaved rounds)")
    print(f"{'encoding':18s} {'B/record':>9s} {'x before':>8s} {'x Lance':>8s} {'encode/s':>10s} "
          f"{'pq read/s':>10s} {'commit/s':>10s} {'x before':>8s} {'loader/s':>10s} {'x before':>8s}")
    rows = list(results.items()) + ([("Lance 14", lance)] if lance else [])
    for cand, r in rows:
        lx = f"{r['bytes'] / lance['bytes']:.2f}" if lance else "-"
        print(f"{cand:18s} {r['bytes'] / n:9.1f} {r['bytes'] / before['bytes']:8.2f} {lx:>8s} "
              f"{fmt_rate(r['encode']):>10s} {fmt_rate(r['read']):>10s} {fmt_rate(r['commit']):>10s} "
              f"{ratio(r['commit'], before['commit']):>8s} {fmt_rate(r['loader']):>10s} "
              f"{ratio(r['loader'], before['loader']):>8s}")
    if lance:
        print("(Lance: write/s in encode and commit columns, its full to_table() read in pq read/s)")


def best_dict(runs: list[dict]) -> dict:
    """Per figure, the best round (bytes are the same every round; rates: the highest). On a
    shared machine the best of interleaved rounds estimates the cost of the work itself."""
    keys = runs[0].keys()
    return {k: (None if runs[0][k] is None else (min if k == "bytes" else max)(r[k] for r in runs)) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=200_000)
    ap.add_argument("--images", type=int, default=1500)
    ap.add_argument("--audio", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", default="text,corpus,image,audio,wav,ids")
    ap.add_argument("--candidates", default="", help="comma-separated candidate names (default: all)")
    ap.add_argument("--bytes-only", action="store_true", help="no commit and loader epoch (large --texts)")
    args = ap.parse_args()
    only = set(args.only.split(","))
    work = tempfile.mkdtemp(prefix="dv-bench-enc-")
    print(f"# shard encoding benchmark, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} "
          f"{os.getloadavg()[1]:.2f} at start, pyarrow {pa.__version__}")
    try:
        datasets = []
        if "text" in only:
            datasets.append(("synthetic texts (bench_core)", lambda: make_text_records(synthetic_texts(args.texts, seed=1)),
                             TEXT_CANDIDATES, "text"))
        if "corpus" in only:
            datasets.append(("real prose corpus (/usr/share/doc, licenses, man)",
                             lambda: make_text_records(corpus_texts(args.texts)), TEXT_CANDIDATES, "text"))
        if "image" in only:
            datasets.append(("JPEG images", lambda: make_binary_records(jpeg_payloads(args.images),
                                                                        ["image"] * args.images), MEDIA_CANDIDATES, "data"))
        if "audio" in only:
            datasets.append(("FLAC audio", lambda: make_binary_records(flac_payloads(args.audio),
                                                                       ["audio"] * args.audio), MEDIA_CANDIDATES, "data"))
        if "wav" in only:  # uncompressed PCM: what a codec on the data column can still gain
            datasets.append(("WAV audio (PCM)", lambda: make_binary_records(flac_payloads(args.audio, fmt="WAV"),
                                                                            ["audio"] * args.audio), MEDIA_CANDIDATES, "data"))
        wanted = set(filter(None, args.candidates.split(",")))
        for name, make, candidates, column in datasets:
            table = make()
            n = table.num_rows
            raw = pa.compute.sum(pa.compute.binary_length(table.column(column))).as_py()
            cands = {k: v for k, v in candidates.items() if not wanted or k in wanted or k.startswith("before")}
            runs: dict[str, list[dict]] = {k: [] for k in cands}
            lance_runs: list[dict] = []
            for _ in range(args.rounds):
                for cand, enc in cands.items():  # interleaved with Lance, round by round
                    runs[cand].append(measure_candidate(table, enc, work, column, full=not args.bytes_only))
                lr = measure_lance(table, work)
                if lr:
                    lance_runs.append(lr)
            results = {k: {**best_dict(v), "raw": raw} for k, v in runs.items()}
            print_table(name, n, results, best_dict(lance_runs) if lance_runs else None, args.rounds)
            print(f"load average now {os.getloadavg()[0]:.2f}", flush=True)
        if "ids" in only:
            texts = synthetic_texts(args.texts, seed=1)
            rates = id_rates(texts, max(3, args.rounds))
            base = rates["xxh3-128"]
            print(f"\n## record ids over {len(texts):,} ~1 KB texts (Arrow buffers hashed in place)")
            for h, r in rates.items():
                print(f"{h:10s} {r:12,.0f} ids/s  {r / base:.2f}x xxh3-128")
        print(f"\nload average at end {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
