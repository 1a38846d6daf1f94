"""The CLI: JSON shapes scripts rely on, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from dataversion.cli import main


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAVERSION_REPO", f"file://{tmp_path}/repo")
    runner = CliRunner()

    def run(*args, code=0):
        result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == code, (args, result.output, result.stderr)
        return result

    run("init")
    raw = tmp_path / "raw"
    (raw / "sub").mkdir(parents=True)
    (raw / "a.txt").write_text("first text")
    (raw / "sub" / "b.txt").write_text("second text")
    run("add", raw, "-m", "one")
    (raw / "c.txt").write_text("third text")
    run("add", raw, "-m", "two")
    run.raw = raw
    return run


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
    assert {"id", "parents", "message", "time", "counts", "records", "manifest", "shards"} <= set(show)
    ls = json.loads(cli("ls", "main", "--json").stdout)
    assert len(ls) == 3 and all({"record_id", "modality", "source"} <= set(r) for r in ls)
    shards = json.loads(cli("ls", "main", "--shards", "--json").stdout)
    assert sum(s["live_rows"] for s in shards) == 3
    v = json.loads(cli("verify", "--all", "--json").stdout)
    assert v["ok"] is True and v["bad"] == []


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


def test_checkout_and_rm(cli, tmp_path):
    cli("checkout", "main", tmp_path / "out")
    assert (tmp_path / "out" / "sub" / "b.txt").read_text() == "second text"
    cli("rm", "--source", "sub/")
    assert [r["source"] for r in json.loads(cli("ls", "--json").stdout)] and all(
        not r["source"].startswith("sub/") for r in json.loads(cli("ls", "--json").stdout)
    )


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["log", "nosuchref"], 3, "unknown ref 'nosuchref'"),
        (["show", "main~9"], 3, "ancestor"),
        (["diff", "main", "zzz"], 3, "unknown ref"),
        (["log", "--repo", "/definitely/not/here"], 3, "no dataversion repository"),
        (["gc", "--grace", "soon"], 2, "invalid duration"),
        (["branch", "bad..name"], 2, "invalid ref name"),
        # optional commands registered from other modules get the same treatment
        (["ingest", "/definitely/not/here"], 3, "does not exist"),
        (["rejects", "main", "--repo", "/definitely/not/here"], 3, "no dataversion repository"),
        (["lineage", "--run", "nope"], 3, "nope"),
    ],
)
def test_errors_are_one_clear_line(cli, args, code, needle):
    out = cli(*args, code=code)
    assert needle in out.stderr
    assert "Traceback" not in out.output
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1


def test_verify_fails_with_nonzero_exit_on_corruption(cli, tmp_path):
    shards = json.loads(cli("ls", "--shards", "--json").stdout)
    path = tmp_path / "repo" / shards[0]["key"]
    path.write_bytes(path.read_bytes()[:-10])
    out = cli("verify", "--all", code=5)
    assert "BAD shards/" in out.stdout and "FAILED" in out.stdout


def test_no_repo_given(tmp_path, monkeypatch):
    monkeypatch.delenv("DATAVERSION_REPO", raising=False)
    result = CliRunner().invoke(main, ["log"])
    assert result.exit_code == 2 and "pass --repo URL or set DATAVERSION_REPO" in result.stderr


def test_console_script_runs_without_optional_dependencies(tmp_path):
    """`import dataversion` and `dataversion --help` must not import Beam, torch or Feast."""
    code = (
        "import sys, dataversion, dataversion.cli\n"
        "heavy = [m for m in ('apache_beam', 'torch', 'feast') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    out = subprocess.run([sys.executable, "-m", "dataversion", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "Usage: " in out.stdout and "checkout" in out.stdout


def test_output_piped_into_head_stops_quietly(cli, tmp_path):
    """`dataversion ls | head -1`: no BrokenPipeError message when the reader goes away."""
    for i in range(3000):
        (cli.raw / f"many{i}.txt").write_text(f"record {i}")
    cli("add", cli.raw)
    p = subprocess.run(
        f"{sys.executable} -m dataversion ls main --json | head -n 1",
        shell=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert p.stdout.strip() == "[" and p.stderr == ""
