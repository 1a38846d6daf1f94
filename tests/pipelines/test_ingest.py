"""End to end: raw objects -> Beam (DirectRunner) -> commit, on real files and the S3 server."""

from __future__ import annotations

import io
import json
import random

import pytest
from pipeline_samples import png_bytes, wav_bytes, words_doc

from dataversion import Repo
from dataversion.errors import ConflictError
from pipelines.config import IngestConfig
from pipelines.ingest import read_duplicates, read_rejects, run_ingest

MULTI = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def write_tree(root, files: dict[str, bytes | str]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())


def sample_tree(vocab) -> dict[str, bytes | str]:
    rng = random.Random(11)
    doc = words_doc(rng, vocab, 120)
    near = doc.replace(doc.split()[5], "different", 1)
    lines = [json.dumps({"text": words_doc(rng, vocab, 40), "lang": "en"}) for _ in range(20)]
    lines.insert(3, "{not json")
    lines.append(json.dumps({"text": doc}))  # exact duplicate of docs/a.txt (after cleaning)
    return {
        "docs/a.txt": doc,
        "docs/a_copy.txt": "  "
        + doc.replace(" ", "  ")
        + "\n",  # same text after whitespace cleaning
        "docs/near.txt": near,
        "docs/pii.txt": "contact me: jane@example.com",
        "docs/lines.jsonl": "\n".join(lines) + "\n",
        "docs/empty.txt": b"",
        "docs/latin1.txt": "caf\xe9".encode("latin-1"),
        "cats/1.png": png_bytes(64, 64, seed=1),
        "cats/1_small.jpg": png_bytes(
            48, 48, seed=1, fmt="JPEG", quality=85
        ),  # near duplicate image
        "cats/2.png": png_bytes(64, 64, seed=2),
        "cats/fake.png": "not an image",
        "dogs/3.png": png_bytes(64, 64, seed=3),
        "dogs/labels.csv": "filename,label\n3.png,Puppy\n",
        "audio/tone.wav": wav_bytes(0.5),
        "audio/cut.wav": wav_bytes(0.5)[:3000],
    }


def check_accounting(report) -> None:
    assert report.inputs == report.kept + report.duplicates + report.rejected


def test_ingest_end_to_end_local(tmp_path, vocab):
    raw = tmp_path / "raw"
    write_tree(raw, sample_tree(vocab))
    url = "file://" + str(tmp_path / "repo")
    r = run_ingest(str(raw), url)
    check_accounting(r)
    # 14 objects (labels.csv is a sidecar, not an input): 13 whole objects + 22 JSONL lines
    assert r.objects == 14 and r.inputs == 13 + 22
    assert (r.kept, r.duplicates, r.rejected) == (26, 4, 5)
    assert r.reasons == {
        "bad_jsonl_line": 1,
        "empty_file": 1,
        "extension_mismatch": 1,
        "invalid_utf8": 1,
        "truncated_audio": 1,
    }
    assert r.duplicate_kinds == {"exact": 2, "near": 2}
    assert r.by_modality == {"audio": 1, "image": 3, "text": 22}
    repo = Repo.open(url)
    commit = repo.read_commit(r.commit)
    assert commit.counts["inputs"] == r.inputs and commit.counts["rejected"] == 5
    assert (
        commit.provenance["config_hash"] == IngestConfig().hash
        and "code_version" in commit.provenance
    )
    rejects = read_rejects(repo, "main")
    assert {x["source"]: x["reason"] for x in rejects}["docs/lines.jsonl#L4"] == "bad_jsonl_line"
    assert all(set(x) == {"source", "reason", "message"} and x["message"] for x in rejects)
    dups = {d["source"]: d for d in read_duplicates(repo, "main")}
    assert dups["docs/a_copy.txt"]["kind"] == "exact" and dups["docs/near.txt"]["kind"] == "near"
    assert dups["cats/1_small.jpg"]["kind"] == "near"
    rows = {row["source"]: row for row in repo.ls("main", columns=("record_id", "source", "label"))}
    assert rows["cats/1.png"]["label"] == "cats" and rows["dogs/3.png"]["label"] == "Puppy"
    assert dups["docs/near.txt"]["duplicate_of"] == rows["docs/a.txt"]["record_id"]
    texts = [t for table in repo.read_rows(r.commit, ["text"]) for t in table.column("text").to_pylist()]
    assert "contact me: <EMAIL>" in texts
    assert repo.verify("main")["ok"]  # every payload hashes to its record id
    assert not list(repo.store.list("tmp/"))  # scratch cleaned


def test_incremental_and_idempotent(tmp_path, vocab):
    raw = tmp_path / "raw"
    rng = random.Random(2)
    base = [words_doc(rng, vocab, 100) for _ in range(5)]
    write_tree(raw, {f"t{i}.txt": d for i, d in enumerate(base)})
    url = "file://" + str(tmp_path / "repo")
    first = run_ingest(str(raw), url)
    assert first.kept == 5 and first.commit
    again = run_ingest(str(raw), url)
    assert (
        again.commit is None
        and again.objects == 0
        and again.objects_skipped == 5
        and "nothing new" in again.message
    )
    repo = Repo.open(url)
    assert repo.branch_tip("main") == first.commit
    # new objects: one new doc, one exact copy of a committed doc, one near copy of a committed doc
    write_tree(
        raw,
        {
            "u_new.txt": words_doc(rng, vocab, 100),
            "u_exact.txt": base[0],
            "u_near.txt": base[1].replace(base[1].split()[3], "tweak", 1),
        },
    )
    second = run_ingest(str(raw), url)
    check_accounting(second)
    assert second.objects == 3 and second.objects_skipped == 5
    assert (second.kept, second.duplicates) == (1, 2) and second.duplicate_kinds == {
        "exact": 1,
        "near": 1,
    }
    commit = repo.read_commit(second.commit)
    assert commit.parents == (first.commit,) and commit.records.count == 6
    parent_shards = {s.id for s in repo.shard_table(repo.read_packing(first.commit))}
    new_shards = [s for s in repo.shard_table(repo.read_packing(second.commit)) if s.id not in parent_shards]
    assert len(new_shards) == 1 and new_shards[0].rows == 1  # only the new record was written
    assert run_ingest(str(raw), url).commit is None


def test_only_rejected_or_duplicate_inputs_still_commit_their_accounting(tmp_path):
    raw = tmp_path / "raw"
    write_tree(raw, {"a.txt": b"", "b.txt": b"\xff"})
    r = run_ingest(str(raw), "file://" + str(tmp_path / "repo"))
    assert r.commit and r.kept == 0 and r.rejected == 2
    assert run_ingest(str(raw), "file://" + str(tmp_path / "repo")).commit is None


def test_branch_moved_during_run_is_a_conflict(tmp_path, monkeypatch):
    import pipelines.ingest as ingest

    raw = tmp_path / "raw"
    write_tree(raw, {"a.txt": "alpha text"})
    url = "file://" + str(tmp_path / "repo")
    real = ingest.build_pipeline

    def racing(pipeline, **kw):  # another writer commits while our pipeline runs
        from dataversion import make_text_records

        Repo.open(url).commit(make_text_records(["someone else"]), branch="main")
        return real(pipeline, **kw)

    monkeypatch.setattr(ingest, "build_pipeline", racing)
    with pytest.raises(ConflictError):
        run_ingest(str(raw), url)
    repo = Repo.open(url)
    assert len(repo.log("main")) == 1  # only the other writer's commit


def test_add_and_ingest_reject_the_same_jsonl_lines_alike(tmp_path, vocab):
    rng = random.Random(5)
    good = [json.dumps({"text": words_doc(rng, vocab, 30), "n": i}).encode() for i in range(4)]
    deep = b"[" * 100_000 + b"]" * 100_000
    lines = [
        good[0] + b"\r",  # CRLF
        b"",
        b"   ",
        b"{not json",
        good[1],
        b'{"text": "caf\xe9"}',  # invalid UTF-8
        b'{"body": "no text field"}',
        b"[1, 2]",
        deep,
        good[2] + b"\r" + good[3],  # a lone CR is no line break
        b'{"text": "nested", "m": ' + deep + b"}",
        good[3],
    ]
    raw = tmp_path / "raw"
    write_tree(raw, {"messy.jsonl": b"\n".join(lines) + b"\n"})
    added = Repo.init("file://" + str(tmp_path / "added"))
    added.add([str(raw)])
    r = run_ingest(str(raw), "file://" + str(tmp_path / "ingested"))
    ingested = read_rejects(Repo.open("file://" + str(tmp_path / "ingested")), "main")
    expected = {
        "messy.jsonl#L4": "bad_jsonl_line",
        "messy.jsonl#L6": "invalid_utf8",
        "messy.jsonl#L7": "missing_text_field",
        "messy.jsonl#L8": "bad_jsonl_line",
        "messy.jsonl#L9": "bad_jsonl_line",
        "messy.jsonl#L10": "bad_jsonl_line",
        "messy.jsonl#L11": "bad_jsonl_line",
    }
    assert {x["source"]: x["reason"] for x in ingested} == expected
    assert (
        sorted(read_rejects(added, "main"), key=lambda x: x["source"]) == ingested
    )  # messages too
    kept = {row["source"] for row in added.ls("main", columns=("record_id", "source"))}
    assert kept == {"messy.jsonl#L1", "messy.jsonl#L5", "messy.jsonl#L12"}
    assert r.inputs == 10 and r.kept == 3 and r.rejected == 7


@pytest.mark.slow
def test_multi_processing_runner_gives_the_same_packing(tmp_path, vocab):
    raw = tmp_path / "raw"
    write_tree(raw, sample_tree(vocab))
    cfg = IngestConfig(target_shard_bytes=20_000)  # several id ranges and shards
    a = run_ingest(str(raw), "file://" + str(tmp_path / "a"), config=cfg)
    b = run_ingest(str(raw), "file://" + str(tmp_path / "b"), config=cfg, beam_args=MULTI)
    ra, rb = Repo.open("file://" + str(tmp_path / "a")), Repo.open("file://" + str(tmp_path / "b"))
    sa, sb = ra.shard_table(ra.read_packing(a.commit)), rb.shard_table(rb.read_packing(b.commit))
    assert len(sa) > 1
    assert [s.id for s in sa] == [s.id for s in sb]
    assert ra.packing_id_of(a.commit) == rb.packing_id_of(b.commit)
    assert ra.root_of(a.commit) == rb.root_of(b.commit)
    assert read_rejects(ra, "main") == read_rejects(rb, "main")
    assert read_duplicates(ra, "main") == read_duplicates(rb, "main")


def test_s3_raw_bucket_into_s3_repo(s3_env, vocab):
    client = s3_env.client()
    raw_bucket = s3_env.new_bucket()
    for key, data in sample_tree(vocab).items():
        data = data if isinstance(data, bytes) else data.encode()
        client.put_object(raw_bucket, f"2026/{key}", io.BytesIO(data), len(data))
    repo_url = f"s3://{s3_env.new_bucket()}/web"
    r = run_ingest(f"s3://{raw_bucket}/2026/", repo_url)
    check_accounting(r)
    assert r.objects == 14 and r.kept == 26 and r.rejected == 5
    repo = Repo.open(repo_url)
    assert repo.read_commit(r.commit).counts["kept"] == 26
    assert len(read_rejects(repo, "main")) == 5
    assert run_ingest(f"s3://{raw_bucket}/2026/", repo_url).commit is None
    data = b"a brand new document for the second run"
    client.put_object(raw_bucket, "2026/docs/new.txt", io.BytesIO(data), len(data))
    r2 = run_ingest(f"s3://{raw_bucket}/2026", repo_url)
    assert (r2.objects, r2.kept) == (1, 1) and repo.read_commit(r2.commit).parents == (r.commit,)


def test_the_driver_and_the_plain_steps_import_without_beam():
    import subprocess
    import sys

    code = (
        "import sys, pipelines, pipelines.ingest, pipelines.graph, pipelines.results, "
        "pipelines.process, pipelines.config, pipelines.dedup.decide, pipelines.runner, "
        "pipelines.readers, dataversion.scan, dataversion.jsonl\n"
        "assert 'apache_beam' not in sys.modules, 'Beam was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ingest_into_a_blake3_repository_computes_blake3_ids(tmp_path, vocab):
    """The workers take the record-id hash from the repository they write to (`init --id-hash`)."""
    import blake3

    rng = random.Random(5)
    docs = [words_doc(rng, vocab, 80) for _ in range(3)]
    raw = tmp_path / "raw"
    write_tree(raw, {**{f"t{i}.txt": d for i, d in enumerate(docs)}, "t0_copy.txt": docs[0],
                     "img/1.png": png_bytes(64, 64, seed=4)})
    url = "file://" + str(tmp_path / "repo")
    repo = Repo.init(url, id_hash="blake3")
    report = run_ingest(str(raw), url)
    check_accounting(report)
    assert (report.kept, report.duplicates) == (4, 1)
    rows = [r for t in repo.read_rows(report.commit, ["text", "data"]) for r in t.to_pylist()]
    assert len(rows) == 4
    for r in rows:
        payload = r["text"].encode() if r["text"] is not None else r["data"]
        assert r["record_id"] == blake3.blake3(payload).digest(16)
    assert repo.verify()["ok"]
    assert run_ingest(str(raw), url).commit is None  # nothing new: membership by blake3 ids
