"""Refs (`dataversion/refs.py`): ref-name rules, name clashes and compare-and-swap deletion,
run unchanged on every store (local disk, memory, the real S3 server)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from dataversion.errors import BadInputError, ConflictError, NotFoundError
from dataversion.refs import HEADS, TAGS, Refs, validate_ref_name
from dataversion.stores import LocalStore, MemoryStore, Store
from dataversion.stores.s3 import S3Store

C1, C2, C3 = ("1" * 32, "2" * 32, "3" * 32)


@pytest.fixture(scope="module")
def s3_bucket(s3_server) -> str:
    return s3_server.new_bucket()


@pytest.fixture(params=["local", "memory", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return LocalStore(str(tmp_path / "store"), create=True)
    if request.param == "memory":
        return MemoryStore()
    server = request.getfixturevalue("s3_server")
    return S3Store(request.getfixturevalue("s3_bucket"), f"refs-{uuid.uuid4().hex[:12]}",
                   endpoint=server.endpoint, access_key=server.access_key, secret_key=server.secret_key)


@pytest.fixture
def refs(store: Store) -> Refs:
    return Refs(store)


# -- names: git check-ref-format ---------------------------------------------------------------

VALID = ["main", "feature/x", "release-1.0", "v1.2.3", "a/b/c", "under_score", "x.y", "ünïcode", "a+b", "a@b", "@a"]
INVALID = [
    "", "@", "HEAD", "-x", "a..b", "a b", "a\tb", "a\x7fb", "a~1", "a^", "a:b", "a?", "a*", "a[b", "a\\b",
    ".hidden", "a/.b", "a.lock", "a/b.lock/c", "a@{1}", "a/", "/a", "a//b", "a.", "a/b.",
]


@pytest.mark.parametrize("name", VALID)
def test_valid_ref_names(name: str) -> None:
    assert validate_ref_name(name) == name


@pytest.mark.parametrize("name", INVALID, ids=repr)
def test_invalid_ref_names_are_bad_input_naming_the_rule(name: str) -> None:
    with pytest.raises(BadInputError, match="invalid ref name"):
        validate_ref_name(name)


def test_a_commit_id_like_name_is_refused() -> None:
    with pytest.raises(BadInputError, match="looks like a commit id"):
        validate_ref_name("deadbeef")


def test_set_if_equals_refuses_an_invalid_name_on_creation(refs: Refs) -> None:
    with pytest.raises(BadInputError):
        refs.set_if_equals(HEADS + "bad..name", None, C1, reason="t")
    assert refs.list() == {}


# -- a ref name is never also a directory of refs ----------------------------------------------


@pytest.mark.parametrize(("first", "second"), [("main", "main/x"), ("main/x", "main"), ("a", "a/b/c"), ("a/b/c", "a/b")])
def test_a_ref_cannot_be_created_beside_a_clashing_name(refs: Refs, first: str, second: str) -> None:
    refs.set_if_equals(HEADS + first, None, C1, reason="t")
    with pytest.raises(BadInputError, match=f"cannot create branch {second}: branch {first} exists"):
        refs.set_if_equals(HEADS + second, None, C2, reason="t")
    assert refs.list() == {HEADS + first: C1}
    assert [e.new for e in refs.reflog(HEADS + second)] == []


def test_branches_and_tags_do_not_clash(refs: Refs) -> None:
    refs.set_if_equals(HEADS + "v1", None, C1, reason="t")
    refs.set_if_equals(TAGS + "v1/rc", None, C2, reason="t")
    with pytest.raises(BadInputError, match="tag v1/rc exists"):
        refs.set_if_equals(TAGS + "v1", None, C3, reason="t")


def test_a_deleted_ref_frees_its_name_for_a_directory_and_back(refs: Refs) -> None:
    refs.set_if_equals(HEADS + "main/x", None, C1, reason="t")
    refs.delete(HEADS + "main/x", reason="t")
    refs.set_if_equals(HEADS + "main", None, C2, reason="t")
    refs.delete(HEADS + "main", reason="t")
    refs.set_if_equals(HEADS + "main/y", None, C3, reason="t")
    assert refs.list() == {HEADS + "main/y": C3}


def test_moving_a_ref_needs_no_clash_check(refs: Refs) -> None:
    refs.set_if_equals(HEADS + "main", None, C1, reason="t")
    refs.set_if_equals(HEADS + "main", refs.read(HEADS + "main"), C2, reason="t")
    assert refs.read(HEADS + "main").commit_id == C2


# -- deletion by compare-and-swap ----------------------------------------------------------


def test_delete_returns_the_old_tip_and_logs_it(refs: Refs) -> None:
    refs.set_if_equals(HEADS + "dev", None, C1, reason="created")
    assert refs.delete(HEADS + "dev", reason="deleted") == C1
    assert refs.read(HEADS + "dev") is None
    assert [(e.old, e.new, e.reason) for e in refs.reflog(HEADS + "dev")] == [(None, C1, "created"), (C1, None, "deleted")]


def test_delete_of_a_missing_ref_is_not_found(refs: Refs) -> None:
    with pytest.raises(NotFoundError):
        refs.delete(HEADS + "nope", reason="t")


def test_delete_loses_to_an_update_between_its_read_and_its_delete(refs: Refs, monkeypatch) -> None:
    """The update that lands between delete's read and its delete is kept, not lost."""
    refs.set_if_equals(HEADS + "dev", None, C1, reason="t")
    real_read = refs.read_unchecked  # what delete compares against (a corrupt ref can be deleted)

    def read_then_another_writer_moves_it(full_name):
        value = real_read(full_name)
        monkeypatch.setattr(refs, "read_unchecked", real_read)
        refs.set_if_equals(full_name, value, C2, reason="concurrent commit")
        return value

    monkeypatch.setattr(refs, "read_unchecked", read_then_another_writer_moves_it)
    with pytest.raises(ConflictError, match="was not deleted") as info:
        refs.delete(HEADS + "dev", reason="t")
    assert info.value.exit_code == 4
    assert refs.read(HEADS + "dev").commit_id == C2
    assert [e.new for e in refs.reflog(HEADS + "dev")] == [C1, C2]
