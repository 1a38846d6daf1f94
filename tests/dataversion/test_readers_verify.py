"""Every reader checks what it serves: a tampered shard, a swapped packing pointer or a
packing whose index is not the content tree's is exit 5 naming the objects, never other
data (file:// and the real S3 server)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from click.testing import CliRunner

from dataversion import Repo
from dataversion.cli import main
from dataversion.errors import CorruptObjectError
from dataversion.packing import Packing, pointer_key
from dataversion.records import make_text_records
from dataversion.shards import decode_shard, parquet_bytes, shard_key


@pytest.fixture
def repo(repo_url):
    repo = Repo.init(repo_url)
    repo.commit(make_text_records([f"document number {i}" for i in range(20)]), message="one")
    repo.commit(make_text_records([f"second batch {i}" for i in range(5)]), message="two")
    return repo


def _cli(repo, *args):
    return CliRunner().invoke(main, [*args, "--repo", repo.url], catch_exceptions=False)


def _rewrite_first_shard(repo, change):
    shard = repo.shard_table(repo.read_packing(repo.resolve("main")))[0]
    table = decode_shard(repo.store.get(shard_key(shard.id)), shard.id)
    repo.store.put(shard_key(shard.id), bytes(parquet_bytes(change(table))))
    return shard.id


def _set_text(table: pa.Table, row: int, text: str) -> pa.Table:
    texts = table.column("text").to_pylist()
    texts[row] = text
    return table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts, table.schema.field("text").type))


def _set_source(table: pa.Table, row: int, source: str) -> pa.Table:
    values = table.column("source").to_pylist()
    values[row] = source
    return table.set_column(table.schema.get_field_index("source"), "source", pa.array(values, table.schema.field("source").type))


def test_checkout_refuses_a_shard_whose_payload_was_rewritten(repo, tmp_path):
    sid = _rewrite_first_shard(repo, lambda t: _set_text(t, 0, "forged text"))
    fresh = Repo.open(repo.url)
    with pytest.raises(CorruptObjectError, match=sid):
        fresh.checkout("main", str(tmp_path / "out"))
    r = _cli(repo, "checkout", "main", str(tmp_path / "out2"))
    assert r.exit_code == 5 and sid in r.output
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").rglob("*.txt"))


def test_ls_refuses_a_shard_whose_metadata_was_rewritten(repo):
    sid = _rewrite_first_shard(repo, lambda t: _set_source(t, 0, "forged/source.txt"))
    r = _cli(repo, "ls", "main")
    assert r.exit_code == 5, r.output
    assert sid in r.output and "forged" not in r.output


def _rewrite_shard_of(repo, ref: str, change) -> str:
    """Rewrite (as valid Parquet) the shard that holds the records `ref` added."""
    before = {s.id for s in repo.shard_table(repo.read_packing(repo.resolve(f"{ref}~1")))}
    shard = next(s for s in repo.shard_table(repo.read_packing(repo.resolve(ref))) if s.id not in before)
    table = decode_shard(repo.store.get(shard_key(shard.id)), shard.id)
    repo.store.put(shard_key(shard.id), bytes(parquet_bytes(change(table))))
    return shard.id


def test_diff_records_refuses_a_shard_whose_metadata_was_rewritten(repo):
    """diff --records serves each changed record's source and label: they are checked
    against the content tree's entry digests (a user's tampered repository printed the
    forged source with exit 0)."""
    sid = _rewrite_shard_of(repo, "main", lambda t: _set_source(t, 0, "forged/source.txt"))
    r = _cli(repo, "diff", "main~1", "main", "--records")
    assert r.exit_code == 5, r.output
    assert sid in r.output and "forged" not in r.output
    r = _cli(repo, "diff", "main~1", "main", "--records", "--json")
    assert r.exit_code == 5 and "forged" not in r.output


def test_diff_records_refuses_a_shard_whose_labels_were_rewritten(repo):
    sid = _rewrite_shard_of(repo, "main", lambda t: t.set_column(
        t.schema.get_field_index("label"), "label", pa.array(["x"] * t.num_rows, t.schema.field("label").type)))
    r = _cli(repo, "diff", "main~1", "main", "--records")
    assert r.exit_code == 5 and sid in r.output, r.output


def _swap_pointer(repo) -> tuple[str, str]:
    """Point the tip's content root at the older commit's packing; (tip, that packing)."""
    tip, older = repo.resolve("main"), repo.resolve("main~1")
    other = repo.packing_id_of(older)
    repo.store.put(pointer_key(repo.root_of(tip)), other.encode())
    return tip, other


def test_a_swapped_packing_pointer_is_refused_by_every_reader(repo, tmp_path):
    tip, other = _swap_pointer(repo)
    fresh = Repo.open(repo.url)
    with pytest.raises(CorruptObjectError, match=other) as e:
        list(fresh.ls("main"))
    assert tip in str(e.value)
    for args in (["ls", "main"], ["show", "main"], ["checkout", "main", str(tmp_path / "o")], ["diff", "main~1", "main"],
                 ["ls", "main", "--shards"]):
        r = _cli(repo, *args)
        assert r.exit_code == 5, (args, r.output)
        assert other in r.output and tip in r.output


def test_a_packing_that_indexes_other_records_is_refused(repo, tmp_path):
    """A packing object naming the tip's root and count but the older commit's index (and
    shards): the pointer and the packing agree, the index does not match the content tree."""
    tip, older = repo.resolve("main"), repo.resolve("main~1")
    real, old = repo.read_packing(tip), repo.read_packing(older)
    forged = Packing(real.root, real.count, old.index, old.shards)
    repo.store.put(f"packings/{forged.id}.json", forged.to_bytes())
    repo.store.put(pointer_key(real.root), forged.id.encode())
    fresh = Repo.open(repo.url)
    with pytest.raises(CorruptObjectError, match=forged.id):
        list(fresh.ls("main"))
    r = _cli(repo, "checkout", "main", str(tmp_path / "o"))
    assert r.exit_code == 5 and forged.id in r.output
    report = Repo.open(repo.url).verify()
    assert not report["ok"] and any(forged.id in b["problem"] for b in report["bad"])


def test_loader_refuses_a_swapped_packing_pointer(repo):
    torch = pytest.importorskip("torch")  # noqa: F841
    from dataversion.torch import SnapshotLoader

    tip, other = _swap_pointer(repo)
    with pytest.raises(CorruptObjectError, match=other):
        loader = SnapshotLoader(repo.url, ref=tip, batch_size=4, num_workers=0, cache="none")
        list(loader)


def test_loader_refuses_a_packing_that_indexes_other_records(repo):
    pytest.importorskip("torch")
    from dataversion.torch import SnapshotLoader

    tip, older = repo.resolve("main"), repo.resolve("main~1")
    real, old = repo.read_packing(tip), repo.read_packing(older)
    forged = Packing(real.root, real.count, old.index, old.shards)
    repo.store.put(f"packings/{forged.id}.json", forged.to_bytes())
    repo.store.put(pointer_key(real.root), forged.id.encode())
    with pytest.raises(CorruptObjectError, match=forged.id):
        list(SnapshotLoader(repo.url, ref=tip, batch_size=4, num_workers=0, cache="none"))


# ---------------------------------------------------------------------------- verify: every kind
def _forge_history(repo):
    from dataversion.history import history_key

    tip = repo.resolve("main")
    key = history_key(tip)
    d = json.loads(repo.store.get(key))
    d["entries"][0]["counts"]["added"] = 999_999
    repo.store.put(key, json.dumps(d).encode())
    return key


def test_a_forged_history_chunk_fails_verify_and_log_shows_the_true_counts(repo):
    key = _forge_history(repo)
    fresh = Repo.open(repo.url)
    assert fresh.log()[0]["counts"]["added"] == 5
    d = fresh.verify()
    assert not d["ok"] and [b["object"] for b in d["bad"]] == [key]
    r = _cli(repo, "verify", "--all")
    assert r.exit_code == 5 and key in r.output


def test_verify_names_a_corrupt_attachment_a_broken_pin_lineage_entry_and_a_dangling_ref(repo):
    from dataversion.objectdb import blob_key

    res = repo.commit(make_text_records(["with attachment"]), message="att", attachments={"rejects": b"[]"})
    blob = repo.read_commit(res.commit_id).attachments["rejects"]
    repo.store.put(blob_key(blob), b"[tampered]")
    repo.store.put("pins/p1.json", b"{broken")
    repo.store.put("lineage/run/e1.json", json.dumps({"commit": "0" * 32}).encode())
    repo.store.put("refs/heads/ghost", ("f" * 32 + "\n").encode())
    d = Repo.open(repo.url).verify()
    objects = {b["object"] for b in d["bad"]}
    assert {blob_key(blob), "pins/p1.json", "lineage/run/e1.json", "refs/heads/ghost"} <= objects, d["bad"]
    assert d["checked"]["blobs"] >= 1 and d["checked"]["pins"] == 1 and d["checked"]["lineage"] == 1


def test_verify_names_a_corrupt_or_missing_tree_node_and_packing(repo):
    from dataversion.packing import packing_key
    from dataversion.tree import NODE_CACHE, node_key

    tip = repo.resolve("main")
    root_key = node_key(repo.root_of(tip))
    data = bytearray(repo.store.get(root_key))
    data[-1] ^= 1
    repo.store.put(root_key, bytes(data))
    NODE_CACHE.clear()
    d = Repo.open(repo.url).verify()
    assert not d["ok"] and any(b["object"] == root_key and "corrupt" in b["problem"] for b in d["bad"]), d["bad"]
    r = _cli(repo, "ls", "main")
    assert r.exit_code == 5 and repo.root_of(tip) in r.output
    repo.store.delete(packing_key(repo.packing_id_of(repo.resolve("main~1"))))
    d = Repo.open(repo.url).verify()
    assert any("packings/" in b["object"] and "missing" in b["problem"] for b in d["bad"]), d["bad"]


def test_a_packing_pointer_holding_garbage_is_corrupt_in_every_reader(repo, tmp_path):
    """A bit flip that makes the pointer's bytes no packing id (here: non-ASCII) is exit 5
    naming the pointer, in the readers and in verify (not a UnicodeDecodeError)."""
    root = repo.root_of(repo.resolve("main"))
    key = pointer_key(root)
    data = bytearray(repo.store.get(key))
    data[3] ^= 0x80
    repo.store.put(key, bytes(data))
    for args in (["ls", "main"], ["checkout", "main", str(tmp_path / "out")], ["show", "main"]):
        r = _cli(repo, *args)
        assert r.exit_code == 5 and key in r.output, (args, r.output)
    r = _cli(repo, "verify")
    assert r.exit_code == 5 and key in r.output, r.output


def test_ls_of_a_snapshot_with_one_corrupt_shard_prints_nothing(repo):
    """A listing that fits `LS_HELD` is all or nothing: the good shard's rows are not printed
    before the corrupt one's exit 5, and `--json` never leaves a cut-off array on stdout."""
    listed = [r["record_id"] for r in repo.ls("main", columns=("record_id",))]
    shard_of = {h: g.shard for g in repo.locate(repo.resolve("main")) for h in (x.hex() for x in g.ids.tolist())}
    sid = shard_of[listed[-1]]  # the shard read last: rows of another one come first
    assert shard_of[listed[0]] != sid
    table = decode_shard(repo.store.get(shard_key(sid)), sid)
    repo.store.put(shard_key(sid), bytes(parquet_bytes(_set_source(table, 0, "forged/source.txt"))))
    for args in (["ls", "main"], ["ls", "main", "--json"]):
        r = CliRunner().invoke(main, [*args, "--repo", repo.url])
        assert r.exit_code == 5 and sid in r.stderr, r.output
        assert r.stdout == "", r.stdout


def test_verify_names_a_shared_corrupt_shard_once(repo):
    """Both commits' packings hold the first commit's shard: one flipped byte was two BAD
    lines ("2 bad")."""
    first = {s.id for s in repo.shard_table(repo.read_packing(repo.resolve("main~1")))}
    (sid,) = first
    key = shard_key(sid)
    data = bytearray(repo.store.get(key))
    data[100] ^= 1
    repo.store.put(key, bytes(data))
    d = Repo.open(repo.url).verify()
    assert [b["object"] for b in d["bad"]] == [key]
