"""Features end to end with real Feast (no mocks): the pipeline writes a features table per
commit, `publish` exports/applies/materializes idempotently, Feast's point-in-time join and
online store (SDK and `feast serve` over HTTP) return the published values, and the loader
joins features from the pinned commit's table.

The expensive part (two ingests, a removal, two publishes) runs once per module.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_samples import png_bytes, wav_bytes, words_doc

from dataversion import Repo
from dataversion.features import (
    FEATURE_VIEWS,
    FeatureJoin,
    features_key,
    historical,
)
from pipelines.features import load_definitions, publish, write_commit_features
from pipelines.ingest import run_ingest

pytest.importorskip("feast")

FEATURE_REPO = Path(__file__).resolve().parents[2] / "feature_repo"
REFS = ["text_stats:char_count", "text_stats:pii_redactions", "image_stats:width", "labels:label"]


def _write(root: Path, files: dict[str, bytes | str]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())


def _snapshot(paths: list[Path]) -> dict[str, tuple[int, bytes]]:
    out = {}
    for root in paths:
        for p in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if p.is_file():
                out[str(p)] = (p.stat().st_mtime_ns, p.read_bytes())
    return out


class World:
    """Three commits and a published Feast repository, shared by the module's tests."""


@pytest.fixture(scope="module")
def world(tmp_path_factory, vocab) -> World:
    import random

    w = World()
    tmp = tmp_path_factory.mktemp("features")
    rng = random.Random(5)
    raw = tmp / "raw"
    _write(
        raw,
        {
            "docs/a.txt": words_doc(rng, vocab, 60),
            "docs/b.txt": words_doc(rng, vocab, 30),
            "docs/pii.txt": "mail jane@example.com or call +1 415 555 0100 " + words_doc(rng, vocab, 10),
            "cats/1.png": png_bytes(64, 48, seed=1),
            "dogs/2.png": png_bytes(40, 30, seed=2),
            "audio/tone.wav": wav_bytes(0.5, rate=8000),
        },
    )
    w.url = "file://" + str(tmp / "repo")
    w.c1 = run_ingest(str(raw), w.url).commit
    w.repo = Repo.open(w.url)
    w.fr = tmp / "feature_repo"
    shutil.copytree(FEATURE_REPO, w.fr, ignore=shutil.ignore_patterns("data", "__pycache__"))
    w.first = publish(w.repo, "main", w.fr)

    _write(raw, {"docs/c.txt": words_doc(rng, vocab, 80), "cats/3.png": png_bytes(32, 32, seed=3)})
    w.c2 = run_ingest(str(raw), w.url).commit
    rows = {r["source"]: r["record_id"] for r in w.repo.ls(w.c1, columns=("record_id", "source"))}
    w.ids = rows
    w.removed = rows["docs/b.txt"]
    w.c3 = w.repo.rm(ids=[w.removed], message="remove b").commit_id
    w.second = publish(w.repo, "main", w.fr)
    w.times = {c: w.repo.read_commit(c).time for c in (w.c1, w.c2, w.c3)}
    return w


def _store(w: World):
    from feast import FeatureStore

    return FeatureStore(repo_path=str(w.fr))


# ---------------------------------------------------------------------------- the table
def test_pipeline_writes_a_features_table_per_commit(world):
    w = world
    assert w.repo.store.exists(features_key(w.c1)) and w.repo.store.exists(features_key(w.c2))
    t1 = historical(w.repo, w.c1).to_pandas().set_index("record_id")
    assert len(t1) == 6 and set(t1.dataset_commit) == {w.c1}
    assert (t1.event_timestamp == pd.Timestamp(w.times[w.c1])).all()
    src = w.ids
    a = t1.loc[src["docs/a.txt"]]
    assert a.modality == "text" and a.word_count == 60 and a.char_count > 60 and 0 < a.quality_score <= 1
    assert t1.loc[src["docs/pii.txt"]].pii_redactions == 2  # the email and the phone number
    img = t1.loc[src["cats/1.png"]]
    assert (img.width, img.height, img.image_format, img.label) == (64, 48, "png", "cats")
    assert len(img.phash) == 16 and pd.isna(img.char_count)
    snd = t1.loc[src["audio/tone.wav"]]
    assert (snd.sample_rate, snd.channels, round(snd.duration_s, 3)) == (8000, 1, 0.5)
    # the second ingest's table: the parent's rows restamped + its new records
    t2 = historical(w.repo, w.c2).to_pandas()
    assert len(t2) == 8 and set(t2.dataset_commit) == {w.c2}
    assert set(t1.index) < set(t2.record_id)
    # the rm commit had no pipeline run: publish backfilled its table from the shards
    t3 = historical(w.repo, "main")
    assert t3.num_rows == 7 and w.removed not in t3.column("record_id").to_pylist()
    assert historical(w.repo, w.c1, ["labels:label"]).column_names == [
        "record_id", "dataset_commit", "event_timestamp", "label"
    ]


def test_backfill_equals_what_the_pipeline_wrote(world, tmp_path):
    from pipelines.features import compute_commit_features

    piped = historical(world.repo, world.c2)
    assert compute_commit_features(world.repo, world.c2).equals(piped)
    assert write_commit_features(world.repo, world.c2) == {"key": features_key(world.c2), "written": False}


# ---------------------------------------------------------------------------- publish
def test_publish_exports_only_new_rows_and_is_idempotent(world):
    w = world
    assert w.first["applied"] and [p["commit"] for p in w.first["published"]] == [w.c1]
    assert w.first["published"][0]["rows"] == {"text_stats": 3, "image_stats": 2, "audio_stats": 1, "labels": 6}
    # the second publish: c2's two new records, nothing for the removal, no re-apply
    assert not w.second["applied"]
    assert [(p["commit"], p["rows"]) for p in w.second["published"]] == [
        (w.c2, {"text_stats": 1, "image_stats": 1, "audio_stats": 0, "labels": 2}),
        (w.c3, {"text_stats": 0, "image_stats": 0, "audio_stats": 0, "labels": 0}),
    ]
    data = w.fr / "data"
    before = _snapshot([data])
    again = publish(w.repo, "main", w.fr)
    assert again["published"] == [] and not again["applied"] and "nothing to do" in again["message"]
    assert _snapshot([data]) == before  # registry, online store, offline files: untouched


def test_definitions_match_the_core_feature_list():
    from feast import FeatureService, FeatureView

    objs = load_definitions(FEATURE_REPO)
    views = {o.name: [f.name for f in o.features] for o in objs if isinstance(o, FeatureView)}
    assert views == {v: list(fs) for v, fs in FEATURE_VIEWS.items()}
    (service,) = [o for o in objs if isinstance(o, FeatureService)]
    assert service.name == "training"
    ignore = (FEATURE_REPO / ".feastignore").read_text()
    assert "data/" in ignore


# ---------------------------------------------------------------------------- offline, pinned
def test_point_in_time_offline_retrieval_across_commits(world):
    w = world
    new_text = historical(w.repo, w.c2).to_pandas()
    new_id = sorted(set(new_text.record_id) - set(w.ids.values()))[0]
    t = lambda c: pd.Timestamp(w.times[c])  # noqa: E731
    entity_df = pd.DataFrame(
        {
            "record_id": [w.removed, w.removed, new_id, new_id, w.ids["cats/1.png"]],
            "event_timestamp": [t(w.c1), t(w.c3), t(w.c1), t(w.c2), t(w.c3)],
        }
    )
    got = (
        _store(w)
        .get_historical_features(entity_df=entity_df, features=["text_stats:word_count", "image_stats:width", "labels:label"])
        .to_df()
        .sort_values(["record_id", "event_timestamp"])
    )
    by = {(r.record_id, pd.Timestamp(r.event_timestamp)): r for r in got.itertuples()}
    # the removed record still has its features as of c1, after c3 removed it
    assert by[(w.removed, t(w.c1))].word_count == 30
    # a record added by c2 did not exist at c1 (Feast's Dask store drops an entity row whose
    # only feature rows lie in its future instead of returning nulls), exists at c2
    early = by.get((new_id, t(w.c1)))
    assert early is None or pd.isna(early.label)
    assert by[(new_id, t(w.c2))].label is not None
    assert by[(w.ids["cats/1.png"], t(w.c3))].width == 64


def test_historical_frame_equals_feasts_point_in_time_join(world):
    w = world
    frame = historical(w.repo, w.c1).to_pandas()
    entity_df = pd.DataFrame({"record_id": frame.record_id, "event_timestamp": frame.event_timestamp})
    feast_df = (
        _store(w)
        .get_historical_features(entity_df=entity_df, features=_store(w).get_feature_service("training"))
        .to_df()
        .set_index("record_id")
        .sort_index()
    )
    mine = frame.set_index("record_id").sort_index()
    for col in ("char_count", "word_count", "quality_score", "width", "phash", "duration_s", "label", "modality"):
        pd.testing.assert_series_equal(
            mine[col].astype(object).where(mine[col].notna(), None),
            feast_df[col].astype(object).where(feast_df[col].notna(), None),
            check_names=False, check_dtype=False,
        )


def test_historical_cli(world, tmp_path):
    from click.testing import CliRunner

    from pipelines.cli.features import features_group

    out = tmp_path / "frame.parquet"
    res = CliRunner().invoke(features_group, ["historical", world.c1, "--repo", world.url, "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["commit"] == world.c1 and summary["rows"] == 6
    assert pq.read_table(out).equals(historical(world.repo, world.c1))
    res = CliRunner().invoke(features_group, ["publish", "main", "--repo", world.url, "--feature-repo", str(world.fr), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["published"] == []
    res = CliRunner().invoke(features_group, ["historical", "nope", "--repo", world.url])
    assert res.exit_code != 0 and "error:" in res.output


# ---------------------------------------------------------------------------- online
def test_online_features_sdk(world):
    w = world
    ids = [w.ids["docs/pii.txt"], w.ids["cats/1.png"], w.ids["audio/tone.wav"]]
    got = _store(w).get_online_features(
        features=["text_stats:pii_redactions", "image_stats:width", "audio_stats:sample_rate", "labels:label"],
        entity_rows=[{"record_id": r} for r in ids],
    ).to_dict()
    assert got["pii_redactions"] == [2, None, None]
    assert got["width"] == [None, 64, None]
    assert got["sample_rate"] == [None, None, 8000]
    assert got["label"][1] == "cats"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_feast_serve_over_http(world, tmp_path):
    w = world
    port = _free_port()
    home = tmp_path / "home"
    (home / "run").mkdir(parents=True)
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(home / "run")}
    feast_bin = str(Path(sys.executable).parent / "feast")
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(
        [feast_bin, "-c", str(w.fr), "serve", "-h", "127.0.0.1", "-p", str(port), "--workers", "1", "--no-access-log"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    ids = [w.ids["docs/a.txt"], w.ids["dogs/2.png"]]
    body = json.dumps({"features": ["text_stats:char_count", "image_stats:height", "labels:label"],
                       "entities": {"record_id": ids}}).encode()
    try:
        deadline, reply = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/get-online-features", data=body,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=10) as resp:
                    reply = json.loads(resp.read())
                break
            except OSError:
                time.sleep(0.5)
        assert reply is not None, (tmp_path / "serve.log").read_text()[-3000:]
        names = reply["metadata"]["feature_names"]
        values = {n: r["values"] for n, r in zip(names, reply["results"])}
        frame = historical(w.repo, w.c1).to_pandas().set_index("record_id")
        assert values["record_id"] == ids
        assert values["char_count"] == [int(frame.loc[ids[0]].char_count), None]
        assert values["height"] == [None, 30]
        assert values["label"] == [frame.loc[ids[0]].label, "dogs"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


# ---------------------------------------------------------------------------- loader join
def test_feature_join_counts_missing_ids(world):
    table = historical(world.repo, world.c1)
    half = table.slice(0, 3)
    join = FeatureJoin.from_table(half, ["labels:label", "text_stats:word_count"])
    import numpy as np

    from dataversion.features import hex_ids_to_numpy

    ids = table.column("record_id").to_pylist()
    batch = {}
    join.add_to(batch, pa.array(list(hex_ids_to_numpy(ids)), pa.binary(16)))
    assert batch["labels:label"][:3] == half.column("label").to_pylist()
    assert batch["labels:label"][3:] == [None, None, None]
    assert join.missing == 3 and join.looked_up == 6
    assert np.asarray(batch["text_stats:word_count"][3:], dtype=object).tolist() == [None] * 3


def test_loader_joins_features_from_the_pinned_commit(world, tmp_path):
    torch_mod = pytest.importorskip("dataversion.torch")
    w = world
    frame = historical(w.repo, w.c2).to_pandas().set_index("record_id")
    for fmt in ("python", "arrow"):
        loader = torch_mod.SnapshotLoader(w.url, w.c2, batch_size=3, shuffle=True, seed=1, cache=None,
                                          columns=["modality"], features=REFS, format=fmt)
        seen = 0
        for batch in loader:
            for i, rid in enumerate(batch["record_id"]):
                col = batch["labels:label"]
                label = col[i] if fmt == "python" else col[i].as_py()
                assert label == frame.loc[rid].label
                wd = batch["image_stats:width"][i]
                wd = wd if fmt == "python" else wd.as_py()
                assert (wd is None) == pd.isna(frame.loc[rid].width)
                seen += 1
        assert seen >= 8 and loader.features.missing == 0

    # a commit whose features table lacks records: nulls, counted, no crash
    partial = tmp_path / "partial.parquet"
    full = historical(w.repo, w.c3)
    pq.write_table(full.slice(2), partial)
    w.repo.store.put(features_key(w.c3), partial.read_bytes())
    try:
        loader = torch_mod.SnapshotLoader(w.url, w.c3, batch_size=4, shuffle=False, cache=None,
                                          columns=["modality"], features=REFS)
        present = set(full.slice(2).column("record_id").to_pylist())
        absent = nulls = 0
        for batch in loader:
            absent += sum(rid not in present for rid in batch["record_id"])
            nulls += sum(v is None for v in batch["labels:label"])
        assert absent >= 2 and loader.features.missing == absent == nulls
    finally:
        w.repo.store.put(features_key(w.c3), pq_bytes(full))


def pq_bytes(table: pa.Table) -> bytes:
    import io

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def test_feature_join_ids_sharing_their_first_eight_bytes():
    ids = [bytes(8) + bytes([i]) * 8 for i in (1, 2, 3)] + [bytes([9]) * 16]
    table = pa.table({"record_id": [i.hex() for i in ids], "label": ["a", "b", "c", "d"]})
    join = FeatureJoin.from_table(table, ["labels:label"])
    query = [ids[2], ids[0], bytes(8) + bytes([7]) * 8, ids[3], ids[1], bytes([255]) * 16]
    batch = {}
    join.add_to(batch, pa.array(query, pa.binary(16)))
    assert batch["labels:label"] == ["c", "a", None, "d", "b", None]
    assert join.missing == 2
