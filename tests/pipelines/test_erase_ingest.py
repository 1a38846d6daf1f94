"""Erasure and the pipelines: re-ingest of erased content is rejected `erased` (counted in
the accounting), the dedup index and the commit's features table lose the record, and a
Feast repository (offline files and the SQLite online store) no longer returns it.

Real Beam DirectRunner, real Feast; file:// and S3 (the `repo_url` fixture)."""

from __future__ import annotations

import io
import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pipeline_samples import png_bytes, words_doc

from dataversion import Repo
from dataversion.features import features_key
from pipelines.dedup.state import BranchState, read_part
from pipelines.ingest import read_duplicates, run_ingest

FEATURE_REPO = Path(__file__).resolve().parents[2] / "feature_repo"


def _write(root: Path, files: dict[str, bytes | str]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())


@pytest.fixture
def ingested(repo_url, tmp_path, vocab):
    rng = random.Random(11)
    raw = tmp_path / "raw"
    secret = "Personal letter of John Doe. " + words_doc(rng, vocab, 80)
    _write(raw, {"docs/secret.txt": secret, "docs/secret-copy.txt": secret, "docs/a.txt": words_doc(rng, vocab, 60),
                 "docs/b.txt": words_doc(rng, vocab, 70), "img/cat.png": png_bytes(40, 30, seed=4)})
    Repo.init(repo_url)
    first = run_ingest(str(raw), repo_url)
    repo = Repo.open(repo_url)
    ids = {r["source"]: r["record_id"] for r in repo.ls("main", columns=("record_id", "source"))}
    return {"url": repo_url, "raw": raw, "secret": secret, "id": ids.get("docs/secret.txt") or ids["docs/secret-copy.txt"], "first": first, "ids": ids}


def _state_ids(repo, cid):
    """Every record id the commit's dedup state holds an entry for (band rows, hashes)."""
    state = BranchState.from_bytes(repo.read_attachment(cid, "dedup_state"))
    held = set()
    for blob in state.blobs():
        t = read_part(repo.read_blob(blob))
        if "record_id" in t.column_names:  # a band part's fence names no record
            held.update(t.column("record_id").to_pylist())
    return held


def test_reingest_of_erased_content_is_rejected_and_counted(ingested, tmp_path):
    url, sid = ingested["url"], ingested["id"]
    repo = Repo.open(url)
    before = _state_ids(repo, ingested["first"].commit)
    assert bytes.fromhex(sid) in before
    report = repo.erase([sid], reason="deletion request")
    assert report["commits"] == [ingested["first"].commit]
    # the dedup state (band rows and hashes) and the features table of the commit lost the record
    cid = ingested["first"].commit
    state = BranchState.from_bytes(repo.read_attachment(cid, "dedup_state"))
    assert _state_ids(repo, cid) == before - {bytes.fromhex(sid)}
    assert set(state.blobs()) <= set(repo.attachment_ids(cid).values())  # gc keeps them
    feats = pq.read_table(io.BytesIO(repo.store.get(features_key(ingested["first"].commit))))
    assert sid not in feats.column("record_id").to_pylist() and feats.num_rows == 3
    # the duplicates table keeps its entry (the counts hold), marked with the erasure
    dups = read_duplicates(repo, ingested["first"].commit)
    assert [d.get("erased") for d in dups] == [report["erasure"]]
    assert repo.read_commit(ingested["first"].commit).counts["duplicates"] == 1
    # a new source holding the same file again
    again = tmp_path / "again"
    _write(again, {"copy.txt": ingested["secret"], "new.txt": words_doc(random.Random(3), ["fresh", "words", "only"], 60)})
    rep = run_ingest(str(again), url)
    assert rep.reasons.get("erased") == 1
    assert rep.inputs == rep.kept + rep.duplicates + rep.rejected and rep.kept == 1
    assert sid not in [r["record_id"] for r in Repo.open(url).ls("main")]
    assert Repo.open(url).verify()["ok"]


def test_feast_no_longer_returns_the_record(ingested, tmp_path):
    pytest.importorskip("feast")
    from feast import FeatureStore

    from pipelines.features import erase_from_feature_repo, publish

    url, sid = ingested["url"], ingested["id"]
    fr = tmp_path / "feature_repo"
    shutil.copytree(FEATURE_REPO, fr, ignore=shutil.ignore_patterns("data", "__pycache__"))
    repo = Repo.open(url)
    publish(repo, "main", fr)
    other = ingested["ids"]["docs/a.txt"]

    def online():
        return FeatureStore(repo_path=str(fr)).get_online_features(
            features=["text_stats:char_count", "labels:modality"], entity_rows=[{"record_id": sid}, {"record_id": other}]
        ).to_dict()

    before = online()
    assert before["char_count"][0] is not None and before["modality"] == ["text", "text"]
    repo.erase([sid], reason="deletion request")
    report = erase_from_feature_repo(repo, fr)
    assert report["offline_rows_removed"] >= 2 and report["online_rows_nulled"] >= 2
    after = online()
    assert after["char_count"][0] is None and after["modality"][0] is None
    assert after["char_count"][1] == before["char_count"][1]
    for f in (fr / "data" / "offline").glob("*.parquet"):
        assert sid not in pq.read_table(f).column("record_id").to_pylist()
    again = erase_from_feature_repo(repo, fr)
    assert again["offline_rows_removed"] == 0
    assert np.all([publish(repo, "main", fr)["erased"]["offline_rows_removed"] == 0])


def test_erased_text_stays_out_whichever_path_brings_it_back(repo_url, tmp_path):
    """`add` stores a text as it is and `ingest` cleans it (here: the trailing newline), so
    one file has two ids; an erasure through either path keeps it out of the other (a user's
    erased text came back through `ingest` with exit 0, and the other way round)."""
    text = "Personal data of Jane Doe living somewhere in a town nearby\n"
    src = tmp_path / "src"
    _write(src, {"jane.txt": text})
    copy = tmp_path / "copy"
    _write(copy, {"jane_copy.txt": text, "other.txt": "an unrelated text that stays welcome here\n"})
    # add -> erase -> ingest
    repo = Repo.init(repo_url)
    repo.add([str(src)], message="add")
    (rid,) = [r["record_id"] for r in repo.ls("main", columns=("record_id",))]
    repo.erase([rid], reason="gdpr")
    rep = run_ingest(str(copy), repo_url)
    assert (rep.kept, rep.rejected) == (1, 1), rep
    sources = {r["source"] for r in Repo.open(repo_url).ls("main", columns=("source",))}
    assert sources == {"other.txt"}
    # ingest -> erase -> add, in another repository
    url2 = repo_url.rstrip("/") + "-2"
    Repo.init(url2)
    run_ingest(str(src), url2)
    repo2 = Repo.open(url2)
    (rid2,) = [r["record_id"] for r in repo2.ls("main", columns=("record_id",))]
    assert rid2 != rid  # the cleaned form: another id
    repo2.erase([rid2], reason="gdpr")
    res = repo2.add([str(copy)], message="add the copies")
    assert [s["reason"] for s in res.skipped] == ["erased"] and res.added == 1
    assert {r["source"] for r in repo2.ls("main", columns=("source",))} == {"other.txt"}
