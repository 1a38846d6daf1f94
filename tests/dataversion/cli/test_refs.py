"""`dataversion branch | tag | reset | reflog`."""

from __future__ import annotations

import json


def test_branch_tag_reset_reflog(cli):
    cli("tag", "v1", "main~1")
    assert [t["name"] for t in json.loads(cli("tag", "--json").stdout)] == ["v1"]
    out = cli("tag", "v1", "main", code=4)
    assert "tags never move" in out.stderr
    cli("branch", "dev", "v1")
    assert {b["name"] for b in json.loads(cli("branch", "--json").stdout)} == {"main", "dev"}
    cli("reset", "main", "v1")
    assert json.loads(cli("log", "--json").stdout)[0]["message"] == "one"
    assert json.loads(cli("reflog", "main", "--json").stdout)[-1]["reason"].startswith("reset")
