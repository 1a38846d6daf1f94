"""Repository operations, run unchanged on the local store and on the real S3 server."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dataversion import Repo
from dataversion.errors import AmbiguousRefError, BadInputError, ConflictError, NotFoundError
from dataversion.records import ids_as_numpy, make_text_records
from dataversion.shards import shard_key


def write_tree(root, files: dict[str, bytes | str]) -> None:
    for rel, content in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


@pytest.fixture
def raw(tmp_path):
    root = tmp_path / "raw"
    write_tree(
        root,
        {
            "a.txt": "alpha document",
            "notes/b.md": "# beta\n",
            "c.jsonl": '{"text": "line one", "lang": "en"}\n{"text": "line two"}\nnot json\n',
            "cats/001.png": PNG,
        },
    )
    return root


@pytest.fixture
def repo(repo_url):
    return Repo.init(repo_url)


def test_open_missing_repository_is_a_clear_error(repo_url):
    with pytest.raises(NotFoundError, match="no dataversion repository"):
        Repo.open(repo_url)


def test_add_log_show_ls(repo, raw):
    res = repo.add([str(raw)], message="first import")
    assert res.added == 5 and res.commit_id
    assert [s["source"] for s in res.skipped] == ["c.jsonl#L3"]
    log = repo.log()
    assert [c["message"] for c in log] == ["first import"]
    assert log[0]["records"]["by_modality"] == {"image": 1, "text": 4}
    assert log[0]["counts"]["inputs"] == 6 and log[0]["counts"]["rejected"] == 1
    show = repo.show("main")
    assert show["id"] == res.commit_id and show["refs"] == ["branch main"]
    records = list(repo.ls("main"))
    assert sorted(r["source"] for r in records) == ["a.txt", "c.jsonl#L1", "c.jsonl#L2", "cats/001.png", "notes/b.md"]
    assert {r["modality"] for r in records} == {"text", "image"}


def test_incremental_add_reuses_shards_and_skips_known_content(repo, raw):
    first = repo.add([str(raw)])
    again = repo.add([str(raw)])
    assert again.commit_id is None and again.already_present == 5
    write_tree(raw, {"new.txt": "brand new"})
    second = repo.add([str(raw)])
    assert second.added == 1 and second.already_present == 5
    s1 = repo.shard_table(repo.read_packing(first.commit_id))
    s2 = repo.shard_table(repo.read_packing(second.commit_id))
    assert {s.id for s in s1} <= {s.id for s in s2}
    assert second.bytes_written < sum(s.size for s in s1) * 2


def test_add_counts_hostile_entries_as_rejects_and_never_opens_them(repo, raw, tmp_path):
    """A FIFO (opening it would hang), a symlink out of the tree (/etc/passwd), dangling and
    looping symlinks, hidden names: each is one rejected input, as `ingest` rejects them."""
    os.mkfifo(raw / "pipe.txt")
    os.symlink("/etc/passwd", raw / "passwd.txt")
    os.symlink(raw / "gone.txt", raw / "dangling.txt")
    os.symlink(raw / "loop2", raw / "loop1")
    os.symlink(raw / "loop1", raw / "loop2")
    os.symlink("a.txt", raw / "alias.txt")  # inside the tree: followed
    write_tree(raw, {".env": "SECRET=1", ".git/config": "[core]"})
    res = repo.add([str(raw)])
    reasons = {s["source"]: s["reason"] for s in res.skipped}
    assert reasons == {
        ".env": "hidden_file",
        ".git": "hidden_file",
        "c.jsonl#L3": "bad_jsonl_line",
        "dangling.txt": "broken_symlink",
        "loop1": "broken_symlink",
        "loop2": "broken_symlink",
        "passwd.txt": "symlink_outside_source",
        "pipe.txt": "not_a_regular_file",
    }
    counts = repo.log()[0]["counts"]
    assert counts["inputs"] == 6 + 1 + 7 and counts["rejected"] == 8  # + alias.txt, + hidden
    sources = [r["source"] for r in repo.ls("main")]
    assert len(sources) == 5 and "passwd.txt" not in sources  # alias.txt is a.txt's content


def test_diff_counts_and_records(repo, raw):
    repo.add([str(raw)])
    write_tree(raw, {"d.txt": "delta"})
    os.remove(raw / "a.txt")
    repo.add([str(raw)], sync=True)
    d = repo.diff("main~1", "main", records=True)
    assert (d["added"], d["removed"]) == (1, 1)
    assert d["by_modality"] == {"text": {"added": 1, "removed": 1}}
    assert len(d["records"]["added"]) == 1 and len(d["records"]["removed"]) == 1
    back = repo.diff("main", "main~1")
    assert (back["added"], back["removed"]) == (1, 1)
    assert repo.diff("main", "main")["added"] == 0


def test_sync_makes_snapshot_equal_to_tree(repo, raw, tmp_path):
    repo.add([str(raw)])
    os.remove(raw / "cats/001.png")
    write_tree(raw, {"a.txt": "alpha document, edited"})
    res = repo.add([str(raw)], sync=True)
    assert res.removed == 2 and res.added == 1
    sources = sorted(r["source"] for r in repo.ls("main"))
    assert sources == ["a.txt", "c.jsonl#L1", "c.jsonl#L2", "notes/b.md"]
    out = tmp_path / "out"
    repo.checkout("main", str(out))
    assert (out / "a.txt").read_text() == "alpha document, edited"
    assert not (out / "cats").exists()


def test_rm_by_id_and_by_source(repo, raw):
    repo.add([str(raw)])
    rid = next(r["record_id"] for r in repo.ls("main") if r["source"] == "a.txt")
    assert repo.rm(ids=[rid]).removed == 1
    assert repo.rm(source_prefixes=["c.jsonl"]).removed == 2
    assert sorted(r["source"] for r in repo.ls("main")) == ["cats/001.png", "notes/b.md"]
    assert repo.log()[0]["records"]["count"] == 2
    assert repo.verify()["ok"]


def test_checkout_roundtrip(repo, raw, tmp_path):
    repo.add([str(raw)])
    out = tmp_path / "out"
    info = repo.checkout("main", str(out))
    assert info["records"] == 5
    assert (out / "a.txt").read_text() == "alpha document"
    assert (out / "cats/001.png").read_bytes() == PNG
    lines = [json.loads(x) for x in (out / "c.jsonl").read_text().splitlines()]
    assert lines == [{"text": "line one", "lang": "en"}, {"text": "line two"}]


def test_checkout_refuses_paths_outside_the_directory(repo, tmp_path):
    repo.commit(make_text_records(["ok", "evil"], sources=["fine.txt", "../../evil.txt"]), message="m")
    out = tmp_path / "deep" / "out"
    with pytest.raises(BadInputError, match="outside"):
        repo.checkout("main", str(out))
    assert not (tmp_path / "evil.txt").exists()
    assert list(out.iterdir()) == []  # nothing half-written
    repo.commit(make_text_records(["abs"], sources=["/etc/passwd-copy"]), message="m2")
    with pytest.raises(BadInputError):
        repo.checkout("main", str(out))


def test_ref_syntax(repo, raw):
    c1 = repo.add([str(raw)]).commit_id
    write_tree(raw, {"x.txt": "x"})
    c2 = repo.add([str(raw)]).commit_id
    assert repo.resolve("main") == c2
    assert repo.resolve("main~1") == c1 == repo.resolve("main~")
    assert repo.resolve(c2[:8]) == c2
    assert repo.resolve(c1) == c1
    repo.create_tag("v1", "main~1")
    assert repo.resolve("v1") == c1
    with pytest.raises(NotFoundError, match="unknown ref"):
        repo.resolve("nope")
    with pytest.raises(NotFoundError):
        repo.resolve("main~5")


def test_ambiguous_prefix(repo, raw):
    repo.add([str(raw)])
    # two commit objects whose ids share an 8-char prefix (planted directly in the store)
    repo.store.put("commits/deadbeef" + "0" * 24 + ".json", b"{}")
    repo.store.put("commits/deadbeef" + "1" * 24 + ".json", b"{}")
    with pytest.raises(AmbiguousRefError, match="ambiguous"):
        repo.resolve("deadbeef")


def test_tags_never_move_and_branches_do(repo, raw):
    c1 = repo.add([str(raw)]).commit_id
    repo.create_tag("v1", "main")
    write_tree(raw, {"y.txt": "y"})
    repo.add([str(raw)])
    with pytest.raises(ConflictError, match="tags never move"):
        repo.create_tag("v1", "main")
    assert repo.tags() == {"v1": c1}
    repo.create_branch("dev", "v1")
    assert repo.branches()["dev"] == c1
    with pytest.raises(ConflictError):
        repo.create_branch("dev", "main")
    repo.delete_branch("dev")
    assert "dev" not in repo.branches()


def test_reset_is_recorded_in_reflog(repo, raw):
    c1 = repo.add([str(raw)]).commit_id
    write_tree(raw, {"z.txt": "z"})
    c2 = repo.add([str(raw)]).commit_id
    assert repo.reset("main", c1) == (c2, c1)
    assert repo.resolve("main") == c1
    last = repo.reflog("main")[-1]
    assert (last["old"], last["new"]) == (c2, c1) and last["reason"].startswith("reset")


def test_revert(repo, raw):
    repo.add([str(raw)])
    write_tree(raw, {"w.txt": "w"})
    os.remove(raw / "a.txt")
    repo.add([str(raw)], sync=True)
    res = repo.revert("main")
    assert (res.added, res.removed) == (1, 1)
    assert repo.diff("main~2", "main")["added"] == 0 and repo.diff("main~2", "main")["removed"] == 0
    assert repo.verify()["ok"]


def test_stale_parent_is_a_conflict(repo, raw):
    c1 = repo.add([str(raw)]).commit_id
    write_tree(raw, {"q.txt": "q"})
    repo.add([str(raw)])
    with pytest.raises(ConflictError):
        repo.commit(make_text_records(["late"]), expected_parent=c1)


def test_verify_names_corrupt_and_missing_objects(repo, raw):
    res = repo.add([str(raw)])
    assert repo.verify()["ok"]
    shard = repo.shard_table(repo.read_packing(res.commit_id))[0]
    data = bytearray(repo.store.get(shard_key(shard.id)))
    data[len(data) // 2] ^= 0xFF
    repo.store.put(shard_key(shard.id), bytes(data))
    report = Repo.open(repo.url).verify()
    assert not report["ok"]
    assert report["bad"][0]["object"] == shard_key(shard.id)
    assert "corrupt" in report["bad"][0]["problem"]
    repo.store.delete(shard_key(shard.id))
    report = Repo.open(repo.url).verify("main")
    assert "missing" in report["bad"][0]["problem"]


def test_verify_detects_payload_that_does_not_match_its_id(repo):
    """A shard re-written with a forged payload (and renamed to its new hash) is caught."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from dataversion.hashing import object_id

    res = repo.commit(make_text_records(["genuine"]), message="m")
    shard = repo.shard_table(repo.read_packing(res.commit_id))[0]
    table = pq.read_table(pa.BufferReader(repo.store.get(shard_key(shard.id))))
    forged = table.set_column(table.schema.get_field_index("text"), "text", pa.array(["forged"], pa.large_string()))
    buf = io.BytesIO()
    pq.write_table(forged, buf)
    # point a repo at the forged bytes under the name the packing expects
    repo.store.put(shard_key(shard.id), buf.getvalue())
    report = Repo.open(repo.url).verify()
    assert not report["ok"]
    assert object_id(buf.getvalue()) != shard.id


def test_gc_keeps_reachable_and_young_objects(repo, raw):
    repo.add([str(raw)])
    # leftovers of a commit that never reached its ref
    orphan = make_text_records(["orphan record"])
    refs = repo.write_shards(orphan)
    assert repo.gc(dry_run=True)["deleted"] == 0  # younger than the grace period
    d = repo.gc(dry_run=True, grace_seconds=0)
    assert shard_key(refs[0].id) in d["objects"]
    repo.gc(grace_seconds=0)
    assert not repo.store.exists(shard_key(refs[0].id))
    assert Repo.open(repo.url).verify()["ok"]


def test_reset_away_commits_stay_reachable_through_reflog(repo, raw):
    c1 = repo.add([str(raw)]).commit_id
    write_tree(raw, {"r.txt": "r"})
    c2 = repo.add([str(raw)]).commit_id
    repo.reset("main", c1)
    repo.gc(grace_seconds=0)
    assert repo.read_packing(c2).count == 6
    assert Repo.open(repo.url).verify(c2)["ok"]


def test_empty_repo_log_says_what_to_do(repo):
    with pytest.raises(NotFoundError, match="no commits yet"):
        repo.log()


def test_commit_counts_and_idset_after_rm_and_readd(repo):
    repo.commit(make_text_records(["a", "b", "c"]), message="1")
    rid = ids_as_numpy(make_text_records(["b"]).column("record_id"))
    repo.rm(ids=[rid[0:1].tobytes().hex()])
    res = repo.commit(make_text_records(["b", "d"]), message="2")
    assert res.added == 2  # "b" was removed, so it is new again
    assert repo.log()[0]["records"]["count"] == 4
    fresh = Repo.open(repo.url)
    assert fresh.contains(fresh.resolve("main"), np.array([rid[0]], dtype="S16")).all()
    assert fresh.record_ids(fresh.resolve("main")).contains(np.array([rid[0]], dtype="S16")).all()


def test_small_commit_on_big_s3_repo_reads_only_tree_paths(s3_repo_url):
    """A fresh process adding one record reads the tree paths it changes, never a shard."""
    from dataversion.tree import NODE_CACHE

    repo = Repo.init(s3_repo_url)
    # incompressible payloads, so the shard stays big whatever the shard encoding's codec
    big = [f"payload {i} " + os.urandom(2000).hex() for i in range(3000)]
    first = repo.commit(make_text_records(big), message="big")
    shard_bytes = sum(s.size for s in repo.shard_table(repo.read_packing(first.commit_id)))
    NODE_CACHE.clear()
    fresh = Repo.open(s3_repo_url)
    res = fresh.commit(make_text_records(["one more", big[0]]), message="small")
    assert (res.added, res.already_present) == (1, 1)
    assert fresh.store.stats["GET_BYTES"] < shard_bytes / 50, (fresh.store.stats, shard_bytes)
    assert fresh.diff("main~1", "main")["added"] == 1


def test_gc_with_reflog_expiry_collects_reset_away_commits(repo, raw):
    c1 = repo.add([str(raw)]).commit_id
    write_tree(raw, {"gone.txt": "only in the second commit"})
    c2 = repo.add([str(raw)]).commit_id
    repo.reset("main", c1)
    dry = repo.gc(dry_run=True, grace_seconds=0, expire_reflog_seconds=0)
    assert f"commits/{c2}.json" in dry["objects"] and repo.store.exists(f"commits/{c2}.json")
    repo.gc(grace_seconds=0, expire_reflog_seconds=0)
    fresh = Repo.open(repo.url)
    assert not fresh.store.exists(f"commits/{c2}.json")
    assert fresh.verify()["ok"] and fresh.resolve("main") == c1


def test_checkout_writes_every_record_when_two_share_a_source_path(repo, tmp_path):
    """Edit a file and add it again without --sync: both versions are in the snapshot, with
    one source path. checkout used to say 2 files and write one."""
    raw = tmp_path / "raw"
    write_tree(raw, {"a.txt": "first version", "b.txt": "other"})
    repo.add([str(raw)], message="one")
    write_tree(raw, {"a.txt": "second version"})
    repo.add([str(raw)], message="two")
    out = tmp_path / "out"
    d = repo.checkout("main", str(out))
    written = {p.relative_to(out).as_posix(): p.read_text() for p in out.rglob("*") if p.is_file()}
    assert d["files"] == len(written) == 3
    assert sorted(written.values()) == ["first version", "other", "second version"]
    assert written["b.txt"] == "other"
    assert sorted(r["source"] for r in d["renamed"]) == ["a.txt", "a.txt"]
    assert all(p.startswith("a~") for p in written if p != "b.txt")


def test_checkout_spills_jsonl_lines_and_keeps_their_order(repo, tmp_path, monkeypatch):
    from dataversion.porcelain import checkout as co

    monkeypatch.setattr(co, "_SPILL_BYTES", 200)  # spill after a few lines
    raw = tmp_path / "raw"
    lines = [json.dumps({"text": f"line number {i} " + "x" * (i % 7)}) for i in range(60)]
    write_tree(raw, {"d.jsonl": "\n".join(lines) + "\n", "e.jsonl": json.dumps({"text": "only line"}) + "\n"})
    repo.add([str(raw)], message="jsonl")
    out = tmp_path / "out"
    repo.checkout("main", str(out))
    got = [json.loads(x)["text"] for x in (out / "d.jsonl").read_text().splitlines()]
    assert got == [json.loads(x)["text"] for x in lines]
    assert (out / "e.jsonl").read_text().count("\n") == 1


def test_diff_walks_trees_and_reports_changed_metadata(repo):
    """Same payload, other label: one record changed (same id, other digest)."""
    a = repo.commit(make_text_records(["x", "y", "z"], labels=["a", "a", "a"]), message="1").commit_id
    rid = ids_as_numpy(make_text_records(["y"]).column("record_id"))
    b = repo.commit(make_text_records(["y"], labels=["b"], sources=["y.txt"]), remove_ids=rid, message="relabel").commit_id
    assert a != b and repo.read_commit(b).records.count == 3
    d = repo.diff(a, b, records=True)
    assert (d["added"], d["removed"], d["changed"]) == (0, 0, 1)
    assert d["records"]["changed"] == [{"record_id": rid[0:1].tobytes().hex(), "modality": "text", "source": "y.txt", "label": "b"}]
    assert repo.diff(a, a)["changed"] == 0
    # revert restores the old label: the content root returns to the first commit's
    res = repo.revert(b)
    assert repo.root_of(res.commit_id) == repo.root_of(a)
    assert [r["label"] for r in repo.ls("main") if r["record_id"] == rid[0:1].tobytes().hex()] == ["a"]


def test_a_diff_over_many_leaves_with_the_records_located_by_the_caller_equals_one_through_the_index(repo):
    """A change spread over every leaf (added, removed and relabelled records across a tree
    of thousands of entries) diffs the same when its descriptions come from row groups the
    caller located (what a report does) as through the index, and the same backwards."""
    texts = [f"doc {i}" for i in range(3000)]
    a = repo.commit(make_text_records(texts, labels=["a"] * 3000), message="a").commit_id
    ids = ids_as_numpy(make_text_records(texts).column("record_id"))
    relabel = [f"doc {i}" for i in range(0, 3000, 7)]
    b = repo.commit(
        make_text_records(relabel + [f"new {i}" for i in range(400)], labels=["b"] * (len(relabel) + 400)),
        remove_ids=np.concatenate([ids[1::5], ids_as_numpy(make_text_records(relabel).column("record_id"))]),
        message="b").commit_id
    plain = repo.diff(a, b, records=True)
    located = repo.diff(a, b, records=True, located_b=repo.locate(b))
    assert located == plain
    gone = {f"doc {i}" for i in range(1, 3000, 5)} - set(relabel)
    assert (plain["added"], plain["removed"], plain["changed"]) == (400, len(gone), len(relabel))
    assert {r["label"] for r in plain["records"]["changed"]} == {"b"}
    back = repo.diff(b, a, records=True)
    assert (back["added"], back["removed"], back["changed"]) == (len(gone), 400, len(relabel))


def test_contains_is_a_tree_lookup_that_reads_no_shard(repo):
    from dataversion.tree import NODE_CACHE

    res = repo.commit(make_text_records([f"member {i}" for i in range(2000)]), message="m")
    NODE_CACHE.clear()
    fresh = Repo.open(repo.url)
    ids = ids_as_numpy(make_text_records(["member 5", "member 1999", "stranger"]).column("record_id"))
    assert fresh.contains(res.commit_id, ids).tolist() == [True, True, False]
    assert not fresh.contains(None, ids).any()
    assert fresh.store.stats["GET"] <= 8  # commit + tree path, never a shard


def test_gc_collects_unreachable_trees_packings_and_pointers(repo):
    repo.commit(make_text_records(["kept"]), message="main")
    side = repo.commit(make_text_records(["only on side"]), branch="side", message="s").commit_id
    root = repo.root_of(side)
    repo.delete_branch("side")
    d = repo.gc(grace_seconds=0, expire_reflog_seconds=0)
    assert f"packing/{root}" in d["objects"] and f"tree/{root}" in d["objects"]
    assert any(o.startswith("packings/") for o in d["objects"])
    assert Repo.open(repo.url).verify()["ok"] and [r["source"] for r in repo.ls("main")] == [None]
