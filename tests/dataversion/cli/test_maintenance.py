"""`dataversion verify | gc`."""

from __future__ import annotations

import json


def test_verify_fails_with_nonzero_exit_on_corruption(cli, tmp_path):
    shards = json.loads(cli("ls", "--shards", "--json").stdout)
    path = tmp_path / "repo" / shards[0]["key"]
    path.write_bytes(path.read_bytes()[:-10])
    out = cli("verify", "--all", code=5)
    assert "BAD shards/" in out.stdout and "FAILED" in out.stdout


def test_gc_dry_run_json(cli):
    d = json.loads(cli("gc", "--dry-run", "--grace", "0", "--json").stdout)
    assert d["deleted"] == 0 and {"bytes", "kept_young"} <= set(d)
