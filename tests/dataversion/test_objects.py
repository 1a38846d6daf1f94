"""The object model: ids are hashes of canonical content; commit ids ignore packing."""

from __future__ import annotations

import pytest
import xxhash

from dataversion import Repo
from dataversion.errors import CorruptObjectError
from dataversion.hashing import canonical_json, record_id_of_text
from dataversion.objects import Commit, Manifest, RecordSummary
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
    ma, mb = a.read_manifest(ra.commit_id), b.read_manifest(rb.commit_id)
    assert len(ma.shards) == 1 and len(mb.shards) > 5
    assert ma.records == mb.records
    assert a.read_commit(ra.commit_id).records == b.read_commit(rb.commit_id).records


def test_commit_id_covers_records_not_shards():
    summary = RecordSummary(3, "00" * 16, {"text": 3})
    c = Commit(parents=(), author="a", time="2026-01-01T00:00:00.000000Z", message="m", records=summary)
    # the stored form points at a manifest, but the id does not depend on which one
    s1 = c.to_stored_bytes("m1" * 16)
    s2 = c.to_stored_bytes("m2" * 16)
    assert Commit.from_stored_bytes(s1, c.id)[0] == Commit.from_stored_bytes(s2, c.id)[0]
    changed = Commit(parents=(), author="a", time=c.time, message="m", records=RecordSummary(4, "00" * 16, {"text": 4}))
    assert changed.id != c.id


def test_tampered_commit_is_detected():
    c = Commit(parents=(), author="a", time="t", message="m", records=RecordSummary(1, "00" * 16, {}))
    data = c.to_stored_bytes("x" * 32).replace(b'"m"', b'"evil"')
    with pytest.raises(CorruptObjectError, match=c.id):
        Commit.from_stored_bytes(data, c.id)


def test_tampered_manifest_is_detected():
    m = Manifest(RecordSummary(0, "00" * 16, {}), ())
    with pytest.raises(CorruptObjectError):
        Manifest.from_bytes(m.to_bytes() + b" ", m.id)


def test_same_records_same_shards_same_ids_on_every_run(tmp_path):
    docs = texts(300)
    ids = []
    for name in ("x", "y"):
        repo = Repo.init(f"file://{tmp_path}/{name}")
        res = repo.commit(make_text_records(docs), message="same", target_shard_bytes=8192)
        ids.append([s.id for s in repo.read_manifest(res.commit_id).shards])
    assert ids[0] == ids[1]
