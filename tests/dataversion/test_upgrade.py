"""`dataversion upgrade`: a format-1 repository (tests/data/format1-repo, written by 0.1) is
refused with one line naming the upgrade, and converts in place keeping messages, refs,
reflog, lineage and pins; old commit ids still resolve."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from dataversion import Repo
from dataversion.cli import main
from dataversion.errors import FormatError

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture
def old_repo(tmp_path) -> str:
    target = tmp_path / "repo"
    shutil.copytree(DATA / "format1-repo", target)
    return str(target)


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads((DATA / "format1-expected.json").read_text())


def test_a_format1_repository_is_refused_with_one_line_naming_upgrade(old_repo):
    with pytest.raises(FormatError, match="format 1") as e:
        Repo.open(old_repo)
    assert "dataversion upgrade" in str(e.value)
    r = CliRunner().invoke(main, ["log", "--repo", old_repo])
    assert r.exit_code == 7
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "dataversion upgrade" in lines[0]


def test_upgrade_converts_in_place_keeping_history_refs_reflog_lineage_and_pins(old_repo, expected):
    before_reflog = sorted(json.loads(p.read_text())["reason"] for p in Path(old_repo, "reflog").rglob("*.json"))
    r = CliRunner().invoke(main, ["upgrade", "--repo", old_repo])
    assert r.exit_code == 0, r.output
    old_ids = expected["main"] + [expected["side"]]
    for old in old_ids:
        assert old in r.output  # the old -> new map is printed
    repo = Repo.open(old_repo)
    mapping = json.loads(repo.store.get("upgrade/format1-ids.json"))["commits"]
    assert set(mapping) == set(old_ids) and all(len(v) == 64 for v in mapping.values())
    # refs, messages, counts, parents
    assert repo.resolve("main") == mapping[expected["main"][0]]
    assert repo.resolve("side") == mapping[expected["side"]]
    assert repo.resolve("v1") == mapping[expected["tag_v1"]]
    log = repo.log("main")
    assert [e["message"] for e in log] == ["remove t00", "second", "first"]
    assert [e["id"] for e in log] == [mapping[c] for c in expected["main"]]
    assert [e["time"] for e in log][-1] == "2026-12-01T00:00:00.000000Z" and log[-1]["author"] == "fixture <f@x>"
    for old, n in expected["records"].items():
        assert repo.read_commit(mapping[old]).records.count == n
        assert len(list(repo.ls(mapping[old]))) == n
    # old ids (a checkpoint's commit) still resolve, also by prefix
    assert repo.resolve(expected["main"][1]) == mapping[expected["main"][1]]
    assert repo.resolve(expected["main"][1][:10]) == mapping[expected["main"][1]]
    # reflog, lineage entry and pin name the new ids
    reflog = repo.reflog()
    assert sorted(e["reason"] for e in reflog) == before_reflog
    assert all(e["new"] is None or len(e["new"]) == 64 for e in reflog)
    entry = json.loads(repo.store.get(expected["lineage_entry"]))
    assert entry["commit"] == mapping[expected["main"][1]]
    pin = json.loads(repo.store.get(expected["lineage_entry"].replace("lineage/", "pins/")))
    assert pin["commits"] == [mapping[expected["main"][1]]]
    # the removed record is gone from main, and the diff says so
    d = repo.diff("main~1", "main", records=True)
    assert d["removed"] == 1 and d["records"]["removed"][0]["record_id"] == expected["removed_record"]
    assert repo.verify()["ok"]
    assert not list(repo.store.list("manifests/"))
    # gc keeps everything reachable; a rerun of upgrade is a no-op
    repo.gc(grace_seconds=0)
    assert Repo.open(old_repo).verify()["ok"]
    again = CliRunner().invoke(main, ["upgrade", "--repo", old_repo])
    assert again.exit_code == 0 and "already" in again.output


def test_upgrade_after_a_crash_midway_finishes(old_repo, expected, monkeypatch):
    """Killed after converting the commits, before the refs moved: the rerun finishes."""
    from dataversion.porcelain import upgrade as mod

    repo = Repo.open(old_repo, any_format=True)

    def crash(*a, **k):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(mod, "_rewrite_refs", crash)
    with pytest.raises(KeyboardInterrupt):
        mod.upgrade(repo)
    monkeypatch.undo()
    with pytest.raises(FormatError):
        Repo.open(old_repo)  # not finished: still refused
    d = mod.upgrade(Repo.open(old_repo, any_format=True))
    assert len(d["commits"]) == 4
    repo = Repo.open(old_repo)
    assert [e["message"] for e in repo.log("main")] == ["remove t00", "second", "first"]
    assert repo.verify()["ok"]
