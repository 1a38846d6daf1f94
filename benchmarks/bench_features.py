"""Features: loader join cost, publish vs a bare `feast materialize`, online lookups (run by hand).

    .venv/bin/python benchmarks/bench_features.py [--records 200000] [--batch 256] [--lookups 200]

One run, one machine, figures and ratios side by side:
1. Loader throughput over one shuffled epoch, without features and with 4 features joined
   from the commit's features table (target >= 0.8x).
2. `dataversion features publish` of a commit of N records (a subprocess: Feast import,
   export, apply, materialize) vs a bare Feast repository holding the same rows and the
   same definitions, `feast apply` done beforehand, timing `feast materialize START END`
   (a subprocess too). Wall time and peak RSS of each (target <= 1.2x time).
3. Online lookups/s for batches of 256 ids through the SDK and through `feast serve`
   (HTTP, keep-alive) on the published repository and on the bare one (target >= 0.9x).
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataversion import Repo  # noqa: E402
from dataversion.features import FEATURE_VIEWS, historical  # noqa: E402
from dataversion.records import make_text_records  # noqa: E402

PY = sys.executable
FEAST = str(Path(sys.executable).parent / "feast")
REFS = ["text_stats:char_count", "text_stats:word_count", "text_stats:quality_score", "labels:label"]
LOOKUP_FEATURES = ["text_stats:char_count", "text_stats:word_count", "text_stats:pii_redactions",
                   "text_stats:quality_score", "labels:label", "labels:modality"]


def build_repo(url: str, n: int) -> str:
    rng = random.Random(0)
    words = "data model train learn batch epoch token image audio sample label clean shard".split()
    texts = [f"{i} " + " ".join(rng.choice(words) for _ in range(rng.randint(20, 160))) for i in range(n)]
    labels = [rng.choice(["news", "code", "chat", None]) for _ in range(n)]
    metas = [json.dumps({"pii": {"email": 1}}) if i % 50 == 0 else None for i in range(n)]
    repo = Repo.init(url)
    return repo.commit(make_text_records(texts, labels=labels, metas=metas), message="bench").commit_id


def run_child(argv: list[str], env: dict | None = None) -> dict:
    """Run a command to completion: wall seconds and its peak RSS (MiB) from wait4."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{argv} failed:\n{out.decode(errors='replace')[-3000:]}")
    return {"seconds": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "output": out.decode(errors="replace")}


def loader_epoch(url: str, cid: str, batch: int, features: list[str] | None) -> float:
    from dataversion.torch import SnapshotLoader

    loader = SnapshotLoader(url, cid, batch_size=batch, shuffle=True, seed=0, cache=None,
                            columns=["label", "text"], features=features)
    t0 = time.perf_counter()
    n = sum(len(b["record_id"]) for b in loader)
    return n / (time.perf_counter() - t0)


def bare_repo(src: Path, dest: Path, table) -> None:
    """A Feast repository with the same definitions and the same rows, set up by hand."""
    from pipelines.features import _view_rows

    dest.mkdir(parents=True)
    for name in ("feature_store.yaml", "definitions.py", ".feastignore"):
        shutil.copy(src / name, dest / name)
    (dest / "data" / "offline").mkdir(parents=True)
    for view in FEATURE_VIEWS:
        pq.write_table(_view_rows(table, view), dest / "data" / "offline" / f"{view}.parquet")


def sdk_lookups(repo_dir: Path, ids: list[str], batch: int, batches: int) -> float:
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo_dir))
    rng = random.Random(1)
    rows = [[{"record_id": r} for r in rng.sample(ids, batch)] for _ in range(batches + 5)]
    for r in rows[:5]:
        store.get_online_features(features=LOOKUP_FEATURES, entity_rows=r)
    gc.collect()
    gc.freeze()
    t0 = time.perf_counter()
    for r in rows[5:]:
        store.get_online_features(features=LOOKUP_FEATURES, entity_rows=r).to_dict()
    rate = batch * batches / (time.perf_counter() - t0)
    gc.unfreeze()
    return rate


def http_lookups(repo_dir: Path, ids: list[str], batch: int, batches: int, home: Path) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (home / "run").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(home / "run")}
    proc = subprocess.Popen([FEAST, "-c", str(repo_dir), "serve", "-h", "127.0.0.1", "-p", str(port),
                             "--workers", "1", "--no-access-log"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    rng = random.Random(2)
    bodies = [json.dumps({"features": LOOKUP_FEATURES, "entities": {"record_id": rng.sample(ids, batch)}})
              for _ in range(batches + 5)]
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("POST", "/get-online-features", bodies[0], {"Content-Type": "application/json"})
                conn.getresponse().read()
                break
            except OSError as e:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("feast serve did not start") from e
                time.sleep(0.5)
        for b in bodies[1:5]:
            conn.request("POST", "/get-online-features", b, {"Content-Type": "application/json"})
            conn.getresponse().read()
        t0 = time.perf_counter()
        for b in bodies[5:]:
            conn.request("POST", "/get-online-features", b, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(body[:500])
        return batch * batches / (time.perf_counter() - t0)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lookups", type=int, default=200, help="batches per online measurement")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--only", choices=["loader"], default=None, help="run only the loader part")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-features-"))
    url = "file://" + str(work / "repo")
    res: dict = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
                 "date": time.strftime("%Y-%m-%d"), "records": args.records, "batch": args.batch}

    t0 = time.perf_counter()
    cid = build_repo(url, args.records)
    res["build_repo_s"] = round(time.perf_counter() - t0, 2)
    from pipelines.features import write_commit_features

    t0 = time.perf_counter()
    write_commit_features(Repo.open(url), cid)  # the pipeline's job (backfill path here)
    res["features_table_s"] = round(time.perf_counter() - t0, 2)
    table = historical(Repo.open(url), cid)
    ids = table.column("record_id").to_pylist()

    # 1. loader
    loader_epoch(url, cid, args.batch, None)  # warm the page cache
    plain = loader_epoch(url, cid, args.batch, None)
    joined = loader_epoch(url, cid, args.batch, REFS)
    res["loader"] = {"records_per_s_without": round(plain), "records_per_s_with_features": round(joined),
                     "ratio": round(joined / plain, 3), "target": ">= 0.8"}
    print(json.dumps(res["loader"]), flush=True)
    if args.only == "loader":
        print(json.dumps(res, indent=2))
        return

    # 2. publish vs bare materialize
    published, bare = work / "feature_repo", work / "bare_repo"
    shutil.copytree(ROOT / "feature_repo", published, ignore=shutil.ignore_patterns("data", "__pycache__"))
    bare_repo(ROOT / "feature_repo", bare, table)
    apply = run_child([FEAST, "-c", str(bare), "apply"])
    t = Repo.open(url).read_commit(cid).time
    start = t.replace("Z", "")
    mat = run_child([FEAST, "-c", str(bare), "materialize", start, start])
    pub = run_child([PY, "-c", (
        f"import sys, json; sys.path.insert(0, {str(ROOT)!r})\n"
        "from dataversion import Repo\nfrom pipelines.features import publish\n"
        f"print(json.dumps(publish(Repo.open({url!r}), {cid!r}, {str(published)!r})['published']))"
    )])
    res["publish"] = {
        "bare_feast_apply_s": apply["seconds"],
        "bare_feast_materialize_s": mat["seconds"], "bare_feast_materialize_peak_mib": mat["peak_rss_mib"],
        "publish_s": pub["seconds"], "publish_peak_mib": pub["peak_rss_mib"],
        "time_ratio": round(pub["seconds"] / mat["seconds"], 3),
        "memory_ratio": round(pub["peak_rss_mib"] / mat["peak_rss_mib"], 3), "target": "<= 1.2 (time)",
    }
    print(json.dumps(res["publish"]), flush=True)

    # 3. online lookups
    sample = ids[:: max(1, len(ids) // 50_000)]
    sdk_pub = sdk_lookups(published, sample, args.batch, args.lookups)
    sdk_bare = sdk_lookups(bare, sample, args.batch, args.lookups)
    http_pub = http_lookups(published, sample, args.batch, args.lookups, work / "home")
    http_bare = http_lookups(bare, sample, args.batch, args.lookups, work / "home")
    res["online"] = {
        "sdk_ids_per_s_published": round(sdk_pub), "sdk_ids_per_s_bare": round(sdk_bare),
        "sdk_ratio": round(sdk_pub / sdk_bare, 3),
        "http_ids_per_s_published": round(http_pub), "http_ids_per_s_bare": round(http_bare),
        "http_ratio": round(http_pub / http_bare, 3), "target": ">= 0.9",
    }
    print(json.dumps(res["online"]), flush=True)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
