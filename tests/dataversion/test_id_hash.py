"""The repository's record-id hash (`init --id-hash blake3`): stored in the config, used by every
component that computes ids, refused where a caller computed ids another way."""

from __future__ import annotations

import json

import blake3
import numpy as np
import pytest
import xxhash
from click.testing import CliRunner

from dataversion import Repo
from dataversion.cli import main
from dataversion.errors import BadInputError, FormatError
from dataversion.hashing import ID_HASHES, id_hasher, record_id_of_bytes, record_id_of_text
from dataversion.records import ids_as_numpy, ids_to_hex, make_binary_records, make_text_records


def b3(data: bytes) -> bytes:
    return blake3.blake3(data).digest(16)


def test_hashers_are_the_named_functions_and_keep_the_id_width():
    doc = "ein Text über nichts".encode()
    assert record_id_of_bytes(doc) == xxhash.xxh3_128_digest(doc)
    assert record_id_of_bytes(doc, "blake3") == b3(doc) == blake3.blake3(doc).digest()[:16]
    assert record_id_of_text("ein Text über nichts", "blake3") == b3(doc)
    assert all(len(id_hasher(h)(doc)) == 16 for h in ID_HASHES)
    with pytest.raises(BadInputError, match="unknown record-id hash 'sha1'"):
        id_hasher("sha1")


def test_blake3_repository_ids_are_blake3_of_content_and_add_verify_work(tmp_path):
    url = f"file://{tmp_path}/repo"
    runner = CliRunner()
    out = runner.invoke(main, ["init", "--repo", url, "--id-hash", "blake3"], catch_exceptions=False)
    assert out.exit_code == 0 and "record ids: blake3" in out.output
    assert json.loads((tmp_path / "repo" / "config.json").read_text())["id_hash"] == "blake3"
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.txt").write_text("first text")
    (raw / "b.jsonl").write_text('{"text": "line one"}\n{"text": "line two"}\n')
    (raw / "c.bin").write_bytes(bytes(range(256)) * 3)
    for args in (["add", str(raw)], ["verify"]):
        r = runner.invoke(main, [*args, "--repo", url], catch_exceptions=False)
        assert r.exit_code == 0, r.output
    repo = Repo.open(url)
    assert repo.id_hash == "blake3"
    rows = {r["source"]: r["record_id"] for r in repo.ls("main")}
    assert rows == {
        "a.txt": b3(b"first text").hex(),
        "b.jsonl#L1": b3(b"line one").hex(),
        "b.jsonl#L2": b3(b"line two").hex(),
        "c.bin": b3(bytes(range(256)) * 3).hex(),
    }
    # the same content again is already present (membership by blake3 id)
    again = repo.add([str(raw)])
    assert again.already_present == 4
    # sync add (one commit of the whole scan) computes the same ids
    (raw / "d.txt").write_text("fourth")
    repo.add([str(raw)], sync=True)
    assert b3(b"fourth").hex() in {r["record_id"] for r in repo.ls("main")}
    assert repo.verify()["ok"]


def test_commit_refuses_ids_of_another_hash_and_accepts_the_repositorys(tmp_path):
    repo = Repo.init(f"file://{tmp_path}/b3", id_hash="blake3")
    texts = ["alpha text", "beta text"]
    with pytest.raises(BadInputError, match="computed with xxh3-128; this repository's record-id hash is blake3"):
        repo.commit(make_text_records(texts))
    with pytest.raises(BadInputError, match="record-id hash is blake3"):
        repo.write_shards(make_binary_records([b"\x89PNG fake"], ["image"]))
    assert repo.branch_tip("main") is None  # nothing committed
    repo.commit(make_text_records(texts, id_hash=repo.id_hash), message="ok")
    ids = ids_to_hex(np.ascontiguousarray(repo.tree(repo.resolve("main")).entries()["id"]))
    assert sorted(ids) == sorted(b3(t.encode()).hex() for t in texts)

    plain = Repo.init(f"file://{tmp_path}/xx")  # default xxh3-128: blake3-made ids are refused too
    assert plain.id_hash == "xxh3-128"
    with pytest.raises(BadInputError, match="computed with blake3; this repository's record-id hash is xxh3-128"):
        plain.commit(make_text_records(texts, id_hash="blake3"))
    plain.commit(make_text_records(texts))


def test_commit_of_ids_that_hash_nothing_is_refused_in_a_blake3_repository(tmp_path):
    repo = Repo.init(f"file://{tmp_path}/b3", id_hash="blake3")
    table = make_text_records(["some text"], id_hash="blake3")
    forged = table.set_column(0, "record_id", make_text_records(["other"], id_hash="blake3").column("record_id"))
    with pytest.raises(BadInputError, match="are not blake3 of their payloads"):
        repo.commit(forged)


def test_init_keeps_the_hash_of_an_existing_repository(tmp_path):
    url = f"file://{tmp_path}/repo"
    Repo.init(url, id_hash="blake3")
    assert Repo.init(url).id_hash == "blake3"  # opened unchanged
    assert Repo.init(url, id_hash="blake3").id_hash == "blake3"
    with pytest.raises(BadInputError, match="already exists with record-id hash blake3; it cannot become xxh3-128"):
        Repo.init(url, id_hash="xxh3-128")
    with pytest.raises(BadInputError, match="unknown record-id hash"):
        Repo.init(f"file://{tmp_path}/other", id_hash="md5")
    assert not (tmp_path / "other").exists()
    r = CliRunner().invoke(main, ["init", "--repo", url, "--id-hash", "xxh3-128"])
    assert r.exit_code != 0 and "cannot become xxh3-128" in r.output + (r.stderr or "")


def test_a_config_without_id_hash_is_xxh3_and_an_unknown_one_is_refused_at_open(tmp_path):
    url = f"file://{tmp_path}/repo"
    repo = Repo.init(url)
    repo.commit(make_text_records(["x"]))
    cfg_path = tmp_path / "repo" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["id_hash"]  # a repository made before the option
    cfg_path.write_text(json.dumps(cfg))
    assert Repo.open(url).id_hash == "xxh3-128"
    cfg["id_hash"] = "sha3-512"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(FormatError, match="record-id hash 'sha3-512'"):
        Repo.open(url)


def test_verify_checks_payloads_with_the_repositorys_hash(tmp_path):
    """A shard whose ids are xxh3 of its payloads is bad in a blake3 repository."""
    from dataversion.shards import payload_mismatches

    table = make_text_records(["a", "b", "c"])
    assert len(payload_mismatches(table)) == 0
    assert list(payload_mismatches(table, "blake3")) == [0, 1, 2]
    assert len(payload_mismatches(make_text_records(["a"], id_hash="blake3"), "blake3")) == 0
    assert np.all(ids_as_numpy(make_text_records(["a"], id_hash="blake3").column("record_id")) == b3(b"a"))
