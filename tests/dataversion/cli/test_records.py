"""`dataversion checkout | rm` (init and add run in every `cli` fixture)."""

from __future__ import annotations

import json


def test_checkout_and_rm(cli, tmp_path):
    cli("checkout", "main", tmp_path / "out")
    assert (tmp_path / "out" / "sub" / "b.txt").read_text() == "second text"
    cli("rm", "--source", "sub/")
    assert [r["source"] for r in json.loads(cli("ls", "--json").stdout)] and all(
        not r["source"].startswith("sub/") for r in json.loads(cli("ls", "--json").stdout)
    )
