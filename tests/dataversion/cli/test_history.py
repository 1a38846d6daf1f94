"""`dataversion log | show | ls | diff`: the JSON shapes scripts rely on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_log_json_shape(cli):
    log = json.loads(cli("log", "--json").stdout)
    assert isinstance(log, list) and len(log) == 2
    for c in log:
        assert {"id", "parents", "message", "time", "counts", "records", "pinned"} <= set(c)
    assert log[0]["parents"] == [log[1]["id"]]
    assert [c["message"] for c in json.loads(cli("log", "-n", "1", "--json").stdout)] == ["two"]


def test_diff_show_ls_verify_json_shapes(cli):
    d = json.loads(cli("diff", "main~1", "main", "--json", "--records").stdout)
    assert d["added"] == 1 and d["removed"] == 0 and d["by_modality"] == {"text": {"added": 1, "removed": 0}}
    assert len(d["records"]["added"]) == 1
    show = json.loads(cli("show", "main", "--json").stdout)
    assert {"id", "parents", "message", "time", "counts", "records", "root", "packing", "shards"} <= set(show)
    ls = json.loads(cli("ls", "main", "--json").stdout)
    assert len(ls) == 3 and all({"record_id", "modality", "source"} <= set(r) for r in ls)
    shards = json.loads(cli("ls", "main", "--shards", "--json").stdout)
    assert sum(s["live_rows"] for s in shards) == 3
    v = json.loads(cli("verify", "--all", "--json").stdout)
    assert v["ok"] is True and v["bad"] == []


def test_output_piped_into_head_stops_quietly(cli, tmp_path):
    """`dataversion ls | head -1`: no BrokenPipeError message when the reader goes away."""
    for i in range(3000):
        (cli.raw / f"many{i}.txt").write_text(f"record {i}")
    cli("add", cli.raw)
    p = subprocess.run(
        f"{sys.executable} -m dataversion ls main --json | head -n 1",
        shell=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert p.stdout.strip() == "[" and p.stderr == ""


def test_diff_records_print_modality_and_source(cli):
    """`diff --records` prints each record's modality and source beside its id."""
    import json

    added = json.loads(cli("diff", "main~1", "main", "--records", "--json").stdout)["records"]["added"]
    line = cli("diff", "main~1", "main", "--records").stdout.splitlines()[-1]
    assert line.split() == ["+", added[-1]["record_id"], added[-1]["modality"], added[-1]["source"]]
