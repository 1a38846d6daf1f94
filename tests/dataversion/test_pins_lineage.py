"""Pins and lineage entries through their whole life: saved, released by `unpin`, collected by
`gc`, checked by `verify`; and pins whose lineage entry was never written (a save whose
repository stalled) are still found and removed by `unpin`."""

from __future__ import annotations

import json
import os
import threading
import time
import warnings

import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from dataversion import Repo  # noqa: E402
from dataversion.cli import main  # noqa: E402
from dataversion.errors import StoreError  # noqa: E402
from dataversion.records import make_text_records  # noqa: E402
from dataversion.repo import commit_key  # noqa: E402
from dataversion.torch import SnapshotLoader, load_checkpoint, save_checkpoint  # noqa: E402
from dataversion.training import lineage  # noqa: E402


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAVERSION_CACHE_DIR", str(tmp_path / "cache"))


def _cli(url, *args):
    return CliRunner().invoke(main, [*args, "--repo", url])


def _loader(url, ref):
    return SnapshotLoader(url, ref=ref, batch_size=4, window=16, columns=["label"], num_workers=0)


def _two_commits(url) -> Repo:
    repo = Repo.init(url)
    repo.commit(make_text_records([f"first {i}" for i in range(12)]), branch="main", message="one")
    repo.commit(make_text_records([f"second {i}" for i in range(12)]), branch="main", message="two")
    return repo


def _save_on_tmp_branch(url, tmp_path, run) -> tuple[Repo, str, str]:
    """The user's steps: a branch at main~1 with one more record, a checkpoint saved on it."""
    repo = _two_commits(url)
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "x.txt").write_text("an extra record only the temporary branch holds")
    assert _cli(url, "branch", "tmpb", "main~1").exit_code == 0
    r = _cli(url, "add", str(extra), "-b", "tmpb")
    assert r.exit_code == 0, r.output
    ld = _loader(url, "tmpb")
    next(iter(ld))
    ckpt = str(tmp_path / "ck" / "two.pt")
    meta = save_checkpoint(ckpt, loader=ld, run=run, step=1)
    assert meta["lineage"] is not None
    return repo, meta["lineage"]["commit"], ckpt


# --------------------------------------------------------------------------- bug 1
def test_verify_passes_after_the_documented_unpin_and_gc(repo_url, tmp_path):
    repo, commit, ckpt = _save_on_tmp_branch(repo_url, tmp_path, "exp-2")
    entry = lineage.entries_of_run(repo, "exp-2")[0]
    assert _cli(repo_url, "branch", "-d", "tmpb").exit_code == 0
    r = _cli(repo_url, "unpin", "--run", "exp-2")
    assert r.exit_code == 0, r.output
    r = _cli(repo_url, "gc", "--grace", "0s", "--expire-reflog", "0s")
    assert r.exit_code == 0, r.output
    assert not repo.store.exists(commit_key(commit))  # the user released it: gc took it

    r = _cli(repo_url, "verify", "--all")
    assert r.exit_code == 0, r.output
    assert "BAD" not in r.output
    d = json.loads(_cli(repo_url, "verify", "--all", "--json").output)
    assert d["ok"] and d["bad"] == []
    assert [(n["object"], n["kind"], n["commit"]) for n in d["notes"]] == [(entry.key, "released", commit)]

    # the entry stays history: lineage lists it (unpinned, its commit gone), no traceback
    r = _cli(repo_url, "lineage", "--run", "exp-2", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [(x["id"], x["pinned"], x["commit_exists"]) for x in rows] == [(entry.id, False, False)]
    r = _cli(repo_url, "lineage", "--run", "exp-2")
    assert r.exit_code == 0 and "commit gone" in r.output and "Traceback" not in r.output
    r = _cli(repo_url, "lineage", "--record", "0" * 32, "--json")
    assert r.exit_code == 0 and json.loads(r.output) == []
    r = _cli(repo_url, "inspect", ckpt)
    assert r.exit_code == 3 and "no longer exists" in r.output and "Traceback" not in r.output
    # unpinning again changes nothing and is not an error
    r = _cli(repo_url, "unpin", "--run", "exp-2", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["unpinned"] == []


def test_a_pinned_entry_whose_commit_is_missing_stays_bad(tmp_path):
    url = "file://" + str(tmp_path / "repo")
    repo, commit, _ = _save_on_tmp_branch(url, tmp_path, "exp-3")
    entry = lineage.entries_of_run(repo, "exp-3")[0]
    assert _cli(url, "branch", "-d", "tmpb").exit_code == 0
    assert _cli(url, "gc", "--grace", "0s", "--expire-reflog", "0s").exit_code == 0
    assert repo.store.exists(commit_key(commit))  # the pin holds it
    repo.store.delete(commit_key(commit))  # lost, while the pin still holds it
    d = Repo.open(url).verify()
    bad = {b["object"]: b["problem"] for b in d["bad"]}
    assert not d["ok"] and entry.key in bad and entry.pin_key in bad, d["bad"]
    assert "missing" in bad[entry.key] and "pinned" in bad[entry.key]
    assert _cli(url, "verify", "--all").exit_code == 5


def test_a_pin_lost_without_unpin_is_still_bad(tmp_path):
    """No unpin recorded the release: a missing commit is a loss, and the message says how to
    record a release that was meant."""
    url = "file://" + str(tmp_path / "repo")
    repo, commit, _ = _save_on_tmp_branch(url, tmp_path, "exp-4")
    entry = lineage.entries_of_run(repo, "exp-4")[0]
    assert _cli(url, "branch", "-d", "tmpb").exit_code == 0
    repo.store.delete(entry.pin_key)  # by hand, not by `unpin`
    assert _cli(url, "gc", "--grace", "0s", "--expire-reflog", "0s").exit_code == 0
    assert not repo.store.exists(commit_key(commit))
    d = Repo.open(url).verify()
    bad = {b["object"]: b["problem"] for b in d["bad"]}
    assert list(bad) == [entry.key] and "unpin --run exp-4" in bad[entry.key], d["bad"]
    # the user says it was released on purpose: unpin records that, verify then passes
    r = _cli(url, "unpin", "--run", "exp-4", "--json")
    assert r.exit_code == 0, r.output
    d = Repo.open(url).verify()
    assert d["ok"], d["bad"]
    assert [n["object"] for n in d["notes"]] == [entry.key]


# --------------------------------------------------------------------------- bug 2
def _orphan_pin(url, tmp_path, monkeypatch, run, ckpt_name) -> tuple[Repo, str, str]:
    """A save whose pin was written but whose lineage entry was not (the entry write fails)."""
    repo = _two_commits(url)
    ld = _loader(url, "main")
    next(iter(ld))
    store = ld.dataset.open_repo().store
    real = store.put_if_absent

    def put_if_absent(key, data):
        if key.startswith("lineage/"):
            raise StoreError(f"connection reset writing {key}")
        return real(key, data)

    monkeypatch.setattr(store, "put_if_absent", put_if_absent)
    monkeypatch.chdir(tmp_path)
    with pytest.warns(RuntimeWarning, match="lineage entry was NOT recorded"):
        meta = save_checkpoint(os.path.join("ck", ckpt_name), loader=ld, run=run, step=1)
    monkeypatch.setattr(store, "put_if_absent", real)
    assert meta["lineage"] is None
    assert lineage.entries(repo) == [] and len(list(repo.store.list("pins/"))) == 1
    return repo, ld.commit_id, os.path.join("ck", ckpt_name)


def test_unpin_by_run_removes_a_pin_whose_entry_was_never_written(tmp_path, monkeypatch):
    url = "file://" + str(tmp_path / "repo")
    repo, commit, _ = _orphan_pin(url, tmp_path, monkeypatch, "exp-stop", "stop.pt")
    assert [c["pinned"] for c in json.loads(_cli(url, "log", "--json").output) if c["id"] == commit] == [True]
    r = _cli(url, "lineage", "--run", "exp-stop")  # no entry to list, but the error says what to do
    assert r.exit_code == 3 and "unpin --run exp-stop" in r.output
    d = Repo.open(url).verify()  # nothing is broken; the pin is named as a note
    assert d["ok"] and [(n["kind"], n["run"]) for n in d["notes"]] == [("pin_without_entry", "exp-stop")]
    r = _cli(url, "unpin", "--run", "exp-stop", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert len(d["unpinned"]) == 1 and d["commits"] == [commit]
    assert list(repo.store.list("pins/")) == []
    assert [c["pinned"] for c in json.loads(_cli(url, "log", "--json").output) if c["id"] == commit] == [False]
    assert _cli(url, "unpin", "--run", "exp-stop").exit_code == 3  # nothing of it is left to unpin
    # nothing holds it any more: a reset away from it and gc take it; verify passes
    repo.reset("main", "main~1")
    assert _cli(url, "gc", "--grace", "0s", "--expire-reflog", "0s").exit_code == 0
    assert not repo.store.exists(commit_key(commit))
    assert _cli(url, "verify", "--all").exit_code == 0


def test_unpin_by_checkpoint_removes_a_pin_whose_entry_was_never_written(tmp_path, monkeypatch):
    url = "file://" + str(tmp_path / "repo")
    repo, commit, rel = _orphan_pin(url, tmp_path, monkeypatch, "exp-stop", "stop.pt")
    # inspect reads the pin of the checkpoint's own lineage id: pinned, though not recorded
    d = json.loads(_cli(url, "inspect", rel, "--json").output)
    assert d["recorded"] == [] and d["pinned"] is True
    r = _cli(url, "unpin", "--checkpoint", rel, "--json")  # relative, from the saving directory
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["commits"] == [commit]
    assert list(repo.store.list("pins/")) == []
    assert json.loads(_cli(url, "inspect", rel, "--json").output)["pinned"] is False
    assert _cli(url, "unpin", "--checkpoint", rel).exit_code == 3


def test_a_stalled_pin_that_lands_after_the_timeout_can_be_unpinned(tmp_path, monkeypatch):
    """The user's sequence: the pin PUT stalls past DATAVERSION_LINEAGE_TIMEOUT and lands
    later; the entry never does. The checkpoint is usable (its commit stays pinned until the
    user says otherwise) and `unpin --run` removes the pin."""
    url = "file://" + str(tmp_path / "repo")
    repo = _two_commits(url)
    ld = _loader(url, "main")
    next(iter(ld))
    store = ld.dataset.open_repo().store
    real = store.put_if_absent
    landed = threading.Event()

    def put_if_absent(key, data):
        if key.startswith("pins/"):
            time.sleep(1.0)  # the server was paused: the answer comes after the timeout
            out = real(key, data)
            landed.set()
            return out
        raise StoreError(f"the process died before writing {key}")

    monkeypatch.setattr(store, "put_if_absent", put_if_absent)
    monkeypatch.setenv("DATAVERSION_LINEAGE_TIMEOUT", "0.2")
    ckpt = str(tmp_path / "ck" / "stop.pt")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert save_checkpoint(ckpt, loader=ld, run="exp-stop", step=1)["lineage"] is None
    assert any("no answer within 0.2 s" in str(x.message) and "unpin" in str(x.message) for x in w), [str(x.message) for x in w]
    assert landed.wait(10)
    assert lineage.entries(repo) == [] and ld.commit_id in repo.root_commits()
    ld2 = _loader(url, "main")
    load_checkpoint(ckpt, loader=ld2)  # the checkpoint is usable
    r = _cli(url, "unpin", "--run", "exp-stop")
    assert r.exit_code == 0, r.output
    assert list(repo.store.list("pins/")) == []
