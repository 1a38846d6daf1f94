"""Ingestion hot paths on one core, side by side with the libraries (run by hand, not a test).

    .venv/bin/python benchmarks/bench_ingest.py [--docs 20000] [--images 600] [--lsh 100000,1000000]

Text: clean + exact dedup, then + MinHash (5-word shingles, 112 permutations), against rensa
(Python shingling + RMinHash) and datasketch (update_batch), each also as a ratio to bare
xxh3-128 of the same bytes. Images: decode + pHash against bare Pillow decode and against
decode + imagehash.phash. LSH banding + verification + clustering: docs/s and peak traced
memory at the given sizes.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import time
import tracemalloc

import numpy as np


def corpus(n: int, seed: int = 0) -> list[str]:
    """~1 KB documents: words, punctuation, numbers, a little PII, some near duplicates."""
    rng = random.Random(seed)
    vocab = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
        for _ in range(20000)
    ]
    extras = [
        "2024",
        "3.5",
        "12",
        "(see",
        "above).",
        "U.S.",
        "e.g.,",
        "call 415-555-2671",
        "mail a.b@example.com",
    ]
    docs = []
    for i in range(n):
        if i % 10 == 9:
            w = docs[-1].split()
            w[rng.randrange(len(w))] = rng.choice(vocab)
            docs.append(" ".join(w))
            continue
        words = [
            rng.choice(vocab) if rng.random() > 0.03 else rng.choice(extras) for _ in range(165)
        ]
        docs.append(" ".join(words))
    return docs


REPEAT = 3  # each figure: the best of this many runs (the machine is shared)


def timed(fn, *args):
    best, out = float("inf"), None
    for _ in range(REPEAT):
        t = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_text(n: int) -> list[tuple[str, float, str]]:
    import xxhash

    from pipelines.config import TextRules
    from pipelines.dedup.minhash import minhash_signatures
    from pipelines.filters.text import clean_texts

    docs = corpus(n)
    raw = [d.encode() for d in docs]
    print(f"text: {n} docs, mean {sum(map(len, raw)) / n:.0f} bytes")
    rows = []
    t_xxh, _ = timed(lambda: [xxhash.xxh3_128_digest(b) for b in raw])
    base = n / t_xxh
    rows.append(("bare xxh3-128 of the same bytes", base, "1.00x"))

    def clean_exact(batch=2048):
        ids = []
        for s in range(0, n, batch):
            cleaned = [
                c.text for c in clean_texts(raw[s : s + batch], TextRules()) if hasattr(c, "text")
            ]
            ids.extend(xxhash.xxh3_128_digest(t.encode()) for t in cleaned)
        arr = np.array(ids, "S16")
        np.unique(arr, return_index=True)
        return cleaned

    def clean_exact_minhash(batch=2048):
        ids = []
        for s in range(0, n, batch):
            cleaned = [
                c.text for c in clean_texts(raw[s : s + batch], TextRules()) if hasattr(c, "text")
            ]
            ids.extend(xxhash.xxh3_128_digest(t.encode()) for t in cleaned)
            minhash_signatures(cleaned, shingle_size=5, num_perm=112, seed=42)
        np.unique(np.array(ids, "S16"), return_index=True)

    t, _ = timed(clean_exact)
    rows.append(("dataversion clean + exact dedup", n / t, f"{(n / t) / base:.3f}x"))
    t, _ = timed(clean_exact_minhash)
    rows.append(("dataversion clean + exact + MinHash", n / t, f"{(n / t) / base:.3f}x"))
    t, _ = timed(lambda: [minhash_signatures(docs[s : s + 2048]) for s in range(0, n, 2048)])
    rows.append(
        ("dataversion MinHash only (numpy shingles + rensa)", n / t, f"{(n / t) / base:.3f}x")
    )

    import rensa

    def rensa_docs():
        for d in docs:
            w = d.lower().split()
            m = rensa.RMinHash(num_perm=112, seed=42)
            m.update([" ".join(w[i : i + 5]) for i in range(len(w) - 4)])
            m.digest()

    t, _ = timed(rensa_docs)
    rows.append(("rensa 0.5 RMinHash incl. Python shingling", n / t, f"{(n / t) / base:.3f}x"))
    pre = [
        [" ".join(w[i : i + 5]) for i in range(len(w) - 4)]
        for w in (d.lower().split() for d in docs)
    ]

    def rensa_pre():
        for sh in pre:
            m = rensa.RMinHash(num_perm=112, seed=42)
            m.update(sh)
            m.digest()

    t, _ = timed(rensa_pre)
    rows.append(("rensa 0.5 RMinHash, pre-shingled", n / t, f"{(n / t) / base:.3f}x"))
    try:
        from datasketch import MinHash

        k = min(n, 3000)

        def ds():
            for d in docs[:k]:
                w = d.lower().split()
                m = MinHash(num_perm=112, seed=42)
                m.update_batch([" ".join(w[i : i + 5]).encode() for i in range(len(w) - 4)])

        t, _ = timed(ds)
        rows.append(
            (f"datasketch MinHash update_batch ({k} docs)", k / t, f"{(k / t) / base:.3f}x")
        )
    except ImportError:
        rows.append(("datasketch (not installed)", float("nan"), ""))
    return rows


def bench_images(n: int) -> list[tuple[str, float, str]]:
    import imagehash
    from PIL import Image

    from pipelines.filters.image import check_image

    rng = np.random.default_rng(0)
    rows = []
    for fmt, size, kw in (("JPEG", (640, 480), {"quality": 90}), ("PNG", (128, 128), {})):
        blobs = []
        for _ in range(n):
            base = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            img = Image.fromarray(base).resize(size, Image.Resampling.BICUBIC)
            noise = rng.integers(0, 24, (size[1], size[0], 3), dtype=np.uint8)
            img = Image.fromarray(np.asarray(img) // 2 + noise)
            buf = io.BytesIO()
            img.save(buf, fmt, **kw)
            blobs.append(buf.getvalue())
        print(
            f"images: {n} {fmt} {size[0]}x{size[1]}, mean {sum(map(len, blobs)) / n / 1024:.0f} KB"
        )

        def bare(blobs=blobs):
            for b in blobs:
                im = Image.open(io.BytesIO(b))
                im.load()

        def ours(blobs=blobs):
            for b in blobs:
                check_image(b)

        def ih(blobs=blobs):
            for b in blobs:
                im = Image.open(io.BytesIO(b))
                im.load()
                imagehash.phash(im)

        t0, _ = timed(bare)
        t1, _ = timed(ours)
        t2, _ = timed(ih)
        rows.append((f"{fmt}: bare Pillow decode", n / t0, "1.00x"))
        rows.append((f"{fmt}: dataversion decode + checks + pHash", n / t1, f"{t0 / t1:.2f}x"))
        rows.append((f"{fmt}: decode + imagehash.phash", n / t2, f"{t0 / t2:.2f}x"))
    return rows


def bench_lsh(n: int) -> list[tuple[str, float, str]]:
    from pipelines.dedup.lsh import minhash_clusters

    rng = np.random.default_rng(1)
    sigs = rng.integers(0, 2**32, (n, 112), dtype=np.uint32)
    dup = rng.choice(n, n // 10, replace=False)  # 10% near duplicates of a random other doc
    src = rng.choice(n, n // 10)
    sigs[dup] = sigs[src]
    flip = rng.random((len(dup), 112)) < 0.1
    sigs[dup] = np.where(flip, rng.integers(0, 2**32, (len(dup), 112), dtype=np.uint32), sigs[dup])
    tracemalloc.start()
    t, reps = timed(lambda: minhash_clusters(sigs, np.arange(n), bands=16, threshold=0.8))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    found = int((reps != np.arange(n)).sum())
    return [
        (
            f"LSH bands + verify + components, {n:,} docs ({found:,} dups)",
            n / t,
            f"peak {peak / 2**20:,.0f} MiB (+{sigs.nbytes / 2**20:,.0f} MiB sigs)",
        )
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--lsh", default="100000", help="comma-separated sizes, e.g. 100000,1000000")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (the best is shown)")
    args = ap.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    except (AttributeError, OSError):
        pass
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus (pinned to 1), python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    print(f"load average at start: {os.getloadavg()}")
    rows = bench_text(args.docs) + (bench_images(args.images) if args.images else [])
    for n in (int(x) for x in args.lsh.split(",") if x):
        rows += bench_lsh(n)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'what':<{width}}  {'per second':>12}  ratio")
    for name, rate, ratio in rows:
        print(f"{name:<{width}}  {rate:>12,.0f}  {ratio}")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
