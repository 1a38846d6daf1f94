"""`dataversion cache status` takes --repo like every command (the tier itself is tested in
tests/dataversion/test_cache.py)."""

from __future__ import annotations

import json


def test_cache_status_with_repo_counts_the_cached_shards(cli, tmp_path):
    cache = tmp_path / "cache"
    d = json.loads(cli("cache", "status", "--cache-dir", cache, "--json").stdout)  # DATAVERSION_REPO is set
    assert d["commit_shards"] >= 1 and d["commit_shards_cached"] == 0 and d["repo"].endswith("/repo")
    cli("cache", "warm", "main", "--cache-dir", cache)
    d = json.loads(cli("cache", "status", "--repo", f"file://{tmp_path}/repo", "--ref", "main~1", "--cache-dir", cache, "--json").stdout)
    assert d["commit_shards"] == 1 and d["commit_shards_cached"] == 0  # a file:// repository is read in place
    assert cli("cache", "status", "--ref", "nope", "--cache-dir", cache, code=3).stderr.startswith("error: unknown ref")


def test_cache_warm_says_when_the_snapshot_does_not_fit(s3_repo_url, tmp_path):
    """A cache smaller than the snapshot keeps only its last shards: warm says so (a user's
    "warmed 9 shards" left 1 cached and 8 evicted, without a word)."""
    from click.testing import CliRunner

    from dataversion import Repo
    from dataversion.cli import main
    from dataversion.records import make_text_records

    repo = Repo.init(s3_repo_url)
    for k in range(4):  # one shard per commit
        repo.commit(make_text_records([f"commit {k} text {i} " + "x" * 2000 for i in range(50)]), message=str(k))
    sizes = [s.size for s in repo.shard_table(repo.read_packing(repo.resolve("main")))]
    assert len(sizes) == 4
    cache = tmp_path / "cache"
    r = CliRunner().invoke(main, ["cache", "warm", "main", "--repo", s3_repo_url, "--cache-dir", str(cache),
                                  "--max-bytes", str(max(sizes) + 10), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["shards"] == 4 and d["held"] < 4
    r = CliRunner().invoke(main, ["cache", "warm", "main", "--repo", s3_repo_url, "--cache-dir", str(cache),
                                  "--max-bytes", str(max(sizes) + 10)])
    assert r.exit_code == 0 and "warning: the cache holds" in r.stderr and "of the 4 shards" in r.stderr, r.output
    r = CliRunner().invoke(main, ["cache", "warm", "main", "--repo", s3_repo_url, "--cache-dir", str(tmp_path / "big")])
    assert r.exit_code == 0 and "warning" not in r.stderr, r.output
