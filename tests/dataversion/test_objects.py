"""The object model: ids are hashes of canonical content; commit ids ignore packing."""

from __future__ import annotations

import pytest
import xxhash

from dataversion import Repo
from dataversion.errors import CorruptObjectError
from dataversion.hashing import canonical_json, record_id_of_text
from dataversion.objects import Commit, RecordSummary
from dataversion.packing import Packing
from dataversion.records import ids_as_numpy, make_text_records


def texts(n: int, tag: str = "") -> list[str]:
    return [f"document {tag}{i} " + "lorem ipsum " * (i % 7) for i in range(n)]


def test_record_id_is_xxh3_128_of_utf8_bytes():
    assert record_id_of_text("héllo") == xxhash.xxh3_128_digest("héllo".encode())
    table = make_text_records(["héllo", "world"])
    ids = ids_as_numpy(table.column("record_id"))
    assert ids[0:1].tobytes() == xxhash.xxh3_128_digest("héllo".encode())


def test_canonical_json_is_order_independent():
    assert canonical_json({"b": 1, "a": [1, {"y": 2, "x": 1}]}) == canonical_json({"a": [1, {"x": 1, "y": 2}], "b": 1})


def test_same_content_gives_same_record_summary_whatever_the_packing(tmp_path):
    """Two repos pack the same records into different shards: the record summary (what the
    commit id covers) is identical, the shard lists are not."""
    docs = texts(500)
    a = Repo.init(f"file://{tmp_path}/a")
    b = Repo.init(f"file://{tmp_path}/b")
    ra = a.commit(make_text_records(docs), message="m")
    rb = b.commit(make_text_records(list(reversed(docs))), message="m", target_shard_bytes=4096)
    pa_, pb = a.read_packing(ra.commit_id), b.read_packing(rb.commit_id)
    assert len(a.shard_table(pa_)) == 1 and len(b.shard_table(pb)) > 5
    assert pa_.root == pb.root and pa_.index != pb.index  # same content, other packing
    assert a.read_commit(ra.commit_id).records == b.read_commit(rb.commit_id).records


def test_commit_id_is_sha256_of_its_bytes_and_covers_the_content_root():
    import hashlib

    summary = RecordSummary(3, "ab" * 32, {"text": 3})
    c = Commit(parents=(), author="a", time="2026-01-01T00:00:00.000000Z", message="m", records=summary)
    assert c.id == hashlib.sha256(c.to_stored_bytes()).hexdigest() and len(c.id) == 64
    assert Commit.from_stored_bytes(c.to_stored_bytes(), c.id) == c
    other_root = Commit(parents=(), author="a", time=c.time, message="m", records=RecordSummary(3, "cd" * 32, {"text": 3}))
    assert other_root.id != c.id


def test_tampered_commit_is_detected():
    c = Commit(parents=(), author="a", time="t", message="m", records=RecordSummary(1, "00" * 16, {}))
    data = c.to_stored_bytes().replace(b'"m"', b'"evil"')
    with pytest.raises(CorruptObjectError, match=c.id):
        Commit.from_stored_bytes(data, c.id)


def test_tampered_packing_is_detected():
    p = Packing("ab" * 32, 3)
    with pytest.raises(CorruptObjectError):
        Packing.from_bytes(p.to_bytes() + b" ", p.id)
    assert Packing.from_bytes(p.to_bytes(), p.id) == p


def test_same_records_same_shards_same_ids_on_every_run(tmp_path):
    docs = texts(300)
    ids = []
    for name in ("x", "y"):
        repo = Repo.init(f"file://{tmp_path}/{name}")
        res = repo.commit(make_text_records(docs), message="same", target_shard_bytes=8192)
        ids.append([s.id for s in repo.shard_table(repo.read_packing(res.commit_id))])
    assert ids[0] == ids[1]
