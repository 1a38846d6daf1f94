"""A small repository with two commits, and a `cli(*args, code=0)` that runs `dataversion`."""

from __future__ import annotations

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
