"""Text documents through the sharded dedup steps, each shard of each step in its own
worker process (run by hand, not a test):

    .venv/bin/python benchmarks/bench_scale.py [--docs 1000000] [--piece 10000] [--parts 0]

Every step task (a listing piece, an id range, a key range) runs in a fresh process
(`maxtasksperchild=1`) that reads its inputs from files (the shuffle), calls the same
functions the Beam steps call (`pipelines.dedup.sharded`, `pipelines.dedup.state`) and
writes its outputs keyed by the next step's shard. Printed: docs/s per core end to end
(clean + MinHash + every dedup step, CPU seconds of the tasks, imports excluded), the peak
RSS of the largest task (and of an idle worker: the imports), the shuffle bytes per
record, the index bytes per record, and a +1% run against the first run's stored state:
the index bytes it writes over the branch's index bytes, and the index bytes it reads (its
bucket step: the fences and the pages of the band parts that can hold its new keys, beside
what reading the covering band parts whole would read; verification: the hash parts).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import random
import resource
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pyarrow as pa

WORK: Path
RULES = None
PARTS = 1


def _init(work: str, parts: int) -> None:
    global WORK, PARTS, RULES
    from pipelines.config import IngestConfig

    WORK, PARTS = Path(work), parts
    RULES = IngestConfig().dedup
    # imports before any task's clock starts
    import dataversion.repo  # noqa: F401
    import pipelines.dedup.sharded  # noqa: F401
    import pipelines.dedup.state  # noqa: F401
    import pipelines.process  # noqa: F401
    import pipelines.writers.shards  # noqa: F401


def _write(step: str, outputs, src: str) -> int:
    """Write (dest part, table) outputs of one task; returns bytes written."""
    import pyarrow as pa

    from pipelines.dedup import state

    by = defaultdict(list)
    for k, t in outputs:
        by[k].append(t)
    n = 0
    for k, ts in by.items():
        d = WORK / step / str(k)
        d.mkdir(parents=True, exist_ok=True)
        data = state.part_bytes(pa.concat_tables(ts))
        (d / f"{src}.arrow").write_bytes(data)
        n += len(data)
    return n


def _read(step: str, k) -> list:
    from pipelines.dedup import state

    d = WORK / step / str(k)
    return (
        [state.read_part(p.read_bytes()) for p in sorted(d.glob("*.arrow"))] if d.exists() else []
    )


def _note_read(name: str, stats, before: tuple[int, int]) -> None:
    """Record the index bytes and requests a task sent to the store since `before`
    (summed by `_reads`: name -> bytes, name + "_gets" -> requests)."""
    (WORK / "reads").mkdir(exist_ok=True)
    got = (stats["GET_BYTES"] - before[0], stats["GET"] - before[1])
    (WORK / "reads" / f"{name}-{os.getpid()}").write_text(f"{got[0]} {got[1]}")


def _reads(work: Path) -> dict:
    out: dict = defaultdict(int)
    for f in (work / "reads").glob("*") if (work / "reads").exists() else []:
        name = f.name.rsplit("-", 1)[0]
        nbytes, gets = f.read_text().split()
        out[name] += int(nbytes)
        out[name + "_gets"] += int(gets)
    return out


def _mark(stats) -> tuple[int, int]:
    return stats["GET_BYTES"], stats["GET"]


def _done(t0: float, extra=0) -> tuple[float, int, int]:
    return time.process_time() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, extra


def _docs(seed: int, n: int) -> list[str]:
    """~1 KB documents, every 10th a near duplicate of the one before."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = _vocab()
    picks = rng.integers(0, len(vocab), (n, 165))
    docs = []
    for i in range(n):
        w = [vocab[j] for j in picks[i]] if i % 10 != 9 else docs[-1].split()
        if i % 10 == 9:
            w[int(picks[i, 0]) % 165] = vocab[int(picks[i, 1])]
        docs.append(" ".join(w))
    return docs


_V: list[str] = []


def _vocab() -> list[str]:
    if not _V:
        rng = random.Random(0)
        _V.extend(
            "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
            for _ in range(20000)
        )
    return _V


def task_read(args):
    piece, n, run = args
    from pipelines.config import IngestConfig
    from pipelines.dedup import sharded
    from pipelines.gcpause import gc_paused
    from pipelines.process import WorkItem, process_objects

    docs = _docs(run * 1_000_003 + piece, n)
    t0 = time.process_time()
    with gc_paused():  # as ReadAndProcess builds its work items
        items = [
            (WorkItem(f"r{run}/p{piece:05d}/{i:06d}.txt", "1-1", len(d)), d.encode())
            for i, d in enumerate(docs)
        ]
    # in the chunks of `max_batch_bytes` that `readers.read.chunked_process` makes
    config = IngestConfig()
    tables, chunk, size = [], [], 0
    for it in items:
        if chunk and size + it[0].size > config.max_batch_bytes:
            tables.append(process_objects(chunk, config).candidates)
            chunk, size = [], 0
        chunk.append(it)
        size += it[0].size
    tables.append(process_objects(chunk, config).candidates)
    cand = pa.concat_tables(tables)
    ids = sharded._ids(cand)
    import numpy as np

    parent = _parent()
    in_parent = parent.contains(ids) if parent else np.zeros(len(ids), bool)
    rows = sharded.dedup_rows(cand, in_parent, RULES)
    # the payloads travel to the final join: only their size matters here
    nbytes = _write(
        "payload",
        sharded.split_by(cand.drop_columns(["text"]), sharded.id_range(ids, PARTS)),
        f"p{piece}",
    )
    nbytes += _write("rows", sharded.split_by(rows, sharded.id_range(ids, PARTS)), f"p{piece}")
    return _done(t0, nbytes)


PARENT = None


def _parent():
    global PARENT
    if PARENT is None and (WORK / "state.json").exists():
        from dataversion import Repo
        from pipelines.dedup.state import BranchState, StateParent

        repo = Repo.open("file://" + str(WORK.parent / "repo"))
        PARENT = StateParent(
            repo, BranchState.from_bytes((WORK / "state.json").read_bytes()), None, RULES
        )
    return PARENT


def task_exact(p):
    from pipelines.dedup import sharded

    t0 = time.process_time()
    dups, nodes = sharded.decide_exact(sharded.concat(_read("rows", p), sharded.ROWS_SCHEMA), RULES)
    n = _write("exact", [(p, dups)], "x") + _write("nodes", [(p, nodes)], "x")
    n += _write("bands", sharded.band_rows(nodes, RULES, PARTS), f"x{p}")
    return _done(t0, n)


def task_buckets(k):
    from pipelines.dedup import sharded

    t0 = time.process_time()
    parent = _parent()
    new = sharded.concat(_read("bands", k), sharded.BANDS_SCHEMA)
    par = None
    if parent:
        before = _mark(parent.repo.store.stats)
        par = parent.band_rows("text", k, PARTS, new.column("key").to_numpy())
        _note_read("bands", parent.repo.store.stats, before)
    pairs = sharded.bucket_pairs(new, par, RULES.max_window)
    n = _write(
        "pairs", sharded.split_by(pairs, sharded.id_range(sharded._ids(pairs, "a"), PARTS)), f"k{k}"
    )
    return _done(t0, n)


def _nodes(p):
    from pipelines.dedup import sharded

    return sharded.concat(_read("nodes", p), sharded.ROWS_SCHEMA)


def task_attach(p):
    from pipelines.dedup import sharded

    t0 = time.process_time()
    out = sharded.attach_a(
        _nodes(p), sharded.concat(_read("pairs", p), sharded.PAIRS_SCHEMA), PARTS
    )
    return _done(t0, _write("att", out, f"a{p}"))


def task_verify(p):
    from pipelines.dedup import sharded

    t0 = time.process_time()
    parent = _parent()
    before = _mark(parent.repo.store.stats) if parent else (0, 0)
    edges = sharded.verify_b(
        _nodes(p),
        sharded.concat(_read("att", p), sharded.ATTACHED_SCHEMA),
        parent.hashes if parent else None,
        RULES,
    )
    if parent:
        _note_read("hashes", parent.repo.store.stats, before)
    return _done(t0, _write("directed", sharded.directed_edges(edges, PARTS), f"v{p}"))


def task_labels(p):
    from pipelines.dedup import sharded

    t0 = time.process_time()
    ts = _read("directed", p)
    if not ts:
        return _done(t0)
    nodes, adj, msgs = sharded.first_labels(pa.concat_tables(ts), PARTS)
    n = _write("state0", [(p, nodes)], "s") + _write("adj", [(p, adj)], "s")
    return _done(t0, n + _write("msg0", msgs, f"m{p}"))


def task_round(args):
    p, r = args
    from pipelines.dedup import sharded

    t0 = time.process_time()
    st = _read(f"state{r}", p)
    if not st:
        return _done(t0)
    nodes, adj = st[0], sharded.concat(_read("adj", p), sharded.ADJ_SCHEMA)
    nodes, adj, msgs, changed = sharded.propagate(
        nodes, adj, sharded.concat(_read(f"msg{r}", p), sharded.MSG_SCHEMA), PARTS
    )
    n = _write(f"state{r + 1}", [(p, nodes)], "s") + _write(f"msg{r + 1}", msgs, f"m{p}")
    return _done(t0, n)


def task_members(args):
    p, r = args
    from pipelines.dedup import sharded

    t0 = time.process_time()
    st = _read(f"state{r}", p)
    if not st:
        return _done(t0)
    return _done(t0, _write("members", sharded.near_members(st[0], PARTS), f"n{p}"))


def task_final(p):
    from pipelines.dedup import sharded

    t0 = time.process_time()
    parent = _parent()
    before = _mark(parent.repo.store.stats) if parent else (0, 0)
    out = sharded.final_similarity(
        _nodes(p),
        sharded.concat(_read("members", p), sharded.FINAL_SCHEMA),
        parent.hashes if parent else None,
        RULES,
        PARTS,
    )
    if parent:
        _note_read("hashes", parent.repo.store.stats, before)
    return _done(t0, _write("near", out, f"f{p}"))


def task_join(p):
    from dataversion import Repo
    from pipelines.dedup import sharded, state
    from pipelines.writers.shards import _entries

    t0 = time.process_time()
    payloads = _read("payload", p)
    if not payloads:
        return _done(t0)
    kept, dups = sharded.decide_range(
        pa.concat_tables(payloads),
        sharded.concat(_read("exact", p), sharded.DUPS_SCHEMA),
        sharded.concat(_read("near", p), sharded.DUPS_SCHEMA),
    )
    repo = Repo.open("file://" + str(WORK.parent / "repo"))
    index_bytes = 0
    (_, ids, h), _img = _entries(kept, RULES.num_perm)
    if len(ids):
        data = state.part_bytes(state.hash_rows(ids, h))
        blob = repo.put_blob(data)
        index_bytes += len(data)
        _write("keptbands", state.band_parts(ids, h, "text", RULES, PARTS), f"j{p}")
        (WORK / "hashparts").mkdir(exist_ok=True)
        (WORK / "hashparts" / f"{p}").write_text(blob)
    (WORK / "kept").mkdir(exist_ok=True)
    (WORK / "kept" / f"{p}").write_text(f"{kept.num_rows} {len(dups)}")
    return _done(t0, index_bytes)


def task_bandparts(k):
    from dataversion import Repo
    from pipelines.dedup import state

    t0 = time.process_time()
    ts = _read("keptbands", k)
    if not ts:
        return _done(t0)
    repo = Repo.open("file://" + str(WORK.parent / "repo"))
    blob, fence = state.write_band_part(repo, state.sort_bands(pa.concat_tables(ts)))
    (WORK / "bandparts").mkdir(exist_ok=True)
    (WORK / "bandparts" / f"{k}").write_text(f"{blob} {fence or ''}".strip())
    size = sum(len(repo.read_blob(b)) for b in (blob, fence) if b)
    return _done(t0, size)


def task_idle(_):
    import pipelines.dedup.sharded  # noqa: F401
    import pipelines.process  # noqa: F401

    return _done(time.process_time())


def run_once(root: Path, run: int, docs: int, piece: int, parts: int, state_json: bytes | None):
    work = root / f"run{run}"
    work.mkdir()
    if state_json:
        (work / "state.json").write_bytes(state_json)
    stats = {}
    ctx = mp.get_context("fork")
    n_pieces = -(-docs // piece)
    with ctx.Pool(2, initializer=_init, initargs=(str(work), parts), maxtasksperchild=1) as pool:

        def step(name, fn, args, consumed=()):
            t = time.monotonic()
            res = pool.map(fn, args, chunksize=1)
            stats[name] = (
                sum(r[0] for r in res),
                max(r[1] for r in res),
                sum(r[2] for r in res),
                time.monotonic() - t,
            )
            for d in consumed:  # shuffle files no later step reads (disk stays ~1/3 of 10M's)
                shutil.rmtree(work / d, ignore_errors=True)

        step("idle", task_idle, [0, 1])
        step(
            "read+clean+minhash",
            task_read,
            [(i, min(piece, docs - i * piece), run) for i in range(n_pieces)],
        )
        step("exact", task_exact, range(parts), ["rows"])
        step("buckets", task_buckets, range(parts), ["bands"])
        step("attach", task_attach, range(parts), ["pairs"])
        step("verify", task_verify, range(parts), ["att"])
        step("labels", task_labels, range(parts), ["directed"])
        r = 0
        for r in range(RULES_MAX_ROUNDS):
            if (
                not any((work / f"msg{r}").glob("*/*.arrow"))
                if (work / f"msg{r}").exists()
                else True
            ):
                break
            step(f"round{r + 1}", task_round, [(p, r) for p in range(parts)], [f"state{r}", f"msg{r}"])
        last = max(
            (int(d.name[5:]) for d in work.glob("state*") if d.name[5:].isdigit()), default=0
        )
        step("members", task_members, [(p, last) for p in range(parts)], [f"state{last}", "adj"])
        step("final", task_final, range(parts), ["members", "nodes"])
        step("join", task_join, range(parts), ["payload", "exact", "near"])
        step("bandparts", task_bandparts, range(parts), ["keptbands"])
    kept = dups = 0
    for f in (work / "kept").glob("*"):
        a, b = f.read_text().split()
        kept, dups = kept + int(a), dups + int(b)
    hashparts = {int(f.name): f.read_text() for f in (work / "hashparts").glob("*")}
    bandparts, fences = {}, {}
    for f in (work / "bandparts").glob("*"):
        blob, *fence = f.read_text().split()
        bandparts[int(f.name)] = blob
        if fence:
            fences[int(f.name)] = fence[0]
    return stats, kept, dups, hashparts, (bandparts, fences), _reads(work)


RULES_MAX_ROUNDS = 12


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--piece", type=int, default=10_000)
    ap.add_argument("--parts", type=int, default=0, help="id / key ranges (default: docs / 50,000)")
    args = ap.parse_args()
    parts = args.parts or max(1, args.docs // 50_000)
    from dataversion import Repo
    from pipelines.config import IngestConfig
    from pipelines.dedup.state import BranchState, run_from_parts
    from pipelines.dedup.state import _covering as state_covering

    rules = IngestConfig().dedup
    root = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        repo = Repo.init("file://" + str(root / "repo"))
        print(
            f"# {platform.machine()} {os.cpu_count()} cpu, python {platform.python_version()}, "
            f"{args.docs:,} docs, {parts} ranges, pieces of {args.piece:,}"
        )
        stats, kept, dups, hp, (bp, bf), _ = run_once(root, 0, args.docs, args.piece, parts, None)
        run1 = run_from_parts({"text": hp}, {"text": bp}, parts, kept, {"text": bf})
        st = BranchState(rules.index_params(), [run1])
        base_index = sum(len(repo.read_blob(b)) for b in st.blobs())
        _report("first run", args.docs, stats, kept, dups, base_index)
        inc = max(1, args.docs // 100)
        stats2, kept2, dups2, hp2, (bp2, bf2), reads = run_once(
            root, 1, inc, min(args.piece, inc), parts, st.to_bytes()
        )
        run2 = run_from_parts({"text": hp2}, {"text": bp2}, parts, kept2, {"text": bf2})
        new_bytes = sum(len(repo.read_blob(b)) for b in BranchState(st.params, [run2]).blobs())
        manifest = len(BranchState(st.params, st.runs + [run2]).to_bytes())
        _report("+1% run against the stored state", inc, stats2, kept2, dups2, new_bytes)
        total = base_index + new_bytes
        # what the bucket step read before fences: every covering band part, whole
        whole = sum(
            len(repo.read_blob(run1["bands"]["text"][str(j)]))
            for k in range(parts)
            for j in state_covering(k, parts, parts)
            if str(j) in run1["bands"]["text"]
        )
        n_whole = sum(
            str(j) in run1["bands"]["text"]
            for k in range(parts)
            for j in state_covering(k, parts, parts)
        )
        bands = sum(len(repo.read_blob(b)) for b in run1["bands"]["text"].values())
        print(
            f"+1%: index bytes written {new_bytes + manifest:,} of {total:,} = "
            f"{(new_bytes + manifest) / total:.4f} (target <= 0.03)\n"
            f"+1%: index bytes read by the bucket step {reads['bands']:,} of {total:,} = "
            f"{reads['bands'] / total:.4f} in {reads['bands_gets']:,} requests "
            f"(band parts {bands:,}: {reads['bands'] / bands:.4f}; "
            f"whole covering parts, as before fences: {whole:,} = {whole / total:.4f} in "
            f"{n_whole} requests); "
            f"by verification (hash parts) {reads['hashes']:,} = {reads['hashes'] / total:.4f} "
            f"in {reads['hashes_gets']:,} requests"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _report(title, docs, stats, kept, dups, index_bytes):
    cpu = sum(v[0] for k, v in stats.items() if k != "idle")
    wall = sum(v[3] for k, v in stats.items() if k != "idle")
    peak = max(v[1] for k, v in stats.items() if k != "idle")
    shuffle = sum(v[2] for k, v in stats.items() if k not in ("idle", "join", "bandparts"))
    print(f"\n## {title}: {docs:,} docs -> kept {kept:,}, duplicates {dups:,}")
    print("| step | cpu s | largest task RSS MiB | bytes out | wall s |")
    print("|---|---|---|---|---|")
    for k, (c, rss, b, w) in stats.items():
        print(f"| {k} | {c:.1f} | {rss / 1024:.0f} | {b:,} | {w:.1f} |")
    print(
        f"end to end: {docs / cpu:,.0f} docs/s per core (cpu {cpu:.1f} s; wall {wall:.1f} s on 2 workers); "
        f"largest task peak RSS {peak / 1024:.0f} MiB (idle worker {stats['idle'][1] / 1024:.0f} MiB); "
        f"shuffle {shuffle / docs:,.0f} B/doc; index {index_bytes / max(kept, 1):,.0f} B/kept doc"
    )


if __name__ == "__main__":
    main()
