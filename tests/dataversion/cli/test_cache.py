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
