"""`dataversion repack`: the packing changes, nothing a user sees does (ids, log, diff, ls,
the loader's order, lineage), and a repack killed at any point leaves a valid repository
that a rerun finishes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from dataversion import Repo
from dataversion.cli import main
from dataversion.porcelain.repack import repack
from dataversion.records import ids_as_numpy, make_text_records


def _fragmented(url: str, commits: int = 12, per: int = 40) -> Repo:
    repo = Repo.init(url)
    for c in range(commits):
        texts = [f"commit {c} record {i} " + "words " * (i % 9) for i in range(per)]
        repo.commit(make_text_records(texts, sources=[f"c{c}/r{i}.txt" for i in range(per)]), message=f"c{c}")
    gone = ids_as_numpy(make_text_records(["commit 3 record 5 " + "words " * 5]).column("record_id"))
    repo.commit(None, remove_ids=gone, message="rm one")
    return repo


def _view(repo: Repo) -> dict:
    tip = repo.resolve("main")
    return {
        "tip": tip,
        "log": [(e["id"], e["message"]) for e in repo.log("main")],
        "ls": sorted((r["record_id"], r["source"]) for r in repo.ls("main")),
        "diff": repo.diff("main~5", "main", records=True),
        "count": repo.read_commit(tip).records.count,
    }


def test_repack_changes_packing_only(repo_url):
    repo = _fragmented(repo_url)
    before = _view(repo)
    shards_before = repo.shard_table(repo.read_packing(before["tip"]))
    assert len(shards_before) == 12
    d = repack(repo, target_bytes=8 * 1024)
    assert d["shards_before"] == 12 and 1 < d["shards_after"] < 12 and d["repointed"] == 1
    assert d["bytes_after"] > 0 and d["seconds"] >= 0
    fresh = Repo.open(repo_url)
    assert _view(fresh) == before
    after = fresh.shard_table(fresh.read_packing(before["tip"]))
    assert all(s.live == s.rows for s in after)  # no dead rows left
    assert fresh.verify()["ok"]
    fresh.gc(grace_seconds=0)
    assert Repo.open(repo_url).verify()["ok"] and _view(Repo.open(repo_url)) == before
    # a second repack has nothing to do
    assert repack(Repo.open(repo_url), target_bytes=8 * 1024)["repointed"] == 0


def test_repack_cli_reports_shards_bytes_and_seconds(tmp_path):
    url = str(tmp_path / "repo")
    _fragmented(url, commits=4)
    r = CliRunner().invoke(main, ["repack", "main", "--target-size", "4096", "--json", "--repo", url])
    assert r.exit_code == 0, r.output
    import json

    d = json.loads(r.output)
    assert {"shards_before", "shards_after", "bytes_before", "bytes_after", "seconds"} <= set(d)
    r = CliRunner().invoke(main, ["repack", "--repo", url])
    assert r.exit_code == 0 and "repacked 1 snapshot(s)" in r.output


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from dataversion import Repo
    from dataversion.objectdb import ObjectDB
    from dataversion.porcelain import repack as mod

    url, point = sys.argv[1:3]
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    if point == "mid_shards":
        real, n = ObjectDB._put_or_freshen, [0]
        def put(self, key, data):
            if key.startswith("shards/"):
                n[0] += 1
                if n[0] == 2:
                    die()
            return real(self, key, data)
        ObjectDB._put_or_freshen = put
    elif point == "before_repoint":
        mod.repoint_packing = lambda *a, **k: die()
    elif point == "after_repoint":
        real_rp = mod.repoint_packing
        def rp(*a, **k):
            real_rp(*a, **k)
            die()
        mod.repoint_packing = rp
    mod.repack(Repo.open(url), target_bytes=8 * 1024)
    """
)


@pytest.mark.parametrize("point", ["mid_shards", "before_repoint", "after_repoint"])
def test_a_repack_killed_at_any_point_leaves_a_valid_repo_and_a_rerun_finishes(tmp_path, point):
    url = str(tmp_path / "repo")
    before = _view(_fragmented(url))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-c", KILLER, url, point], env=env, capture_output=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()
    fresh = Repo.open(url)
    assert fresh.verify()["ok"] and _view(fresh) == before
    d = repack(fresh, target_bytes=8 * 1024)
    assert d["repointed"] == (0 if point == "after_repoint" else 1)
    final = Repo.open(url)
    assert final.verify()["ok"] and _view(final) == before
    assert all(s.live == s.rows for s in final.shard_table(final.read_packing(before["tip"])))
    final.gc(grace_seconds=0)
    assert Repo.open(url).verify()["ok"]
