"""The one error wrapper (`DataversionCommand`): one line and an exit code per kind of
failure, tracebacks only with --debug; the shared repository options."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from dataversion.cli import main
from dataversion.cli.support import DataversionCommand, RepoLocation, parse_duration
from dataversion.errors import BadInputError, ConflictError, NotFoundError


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
        (["runs", "--repo", "/definitely/not/here"], 3, "no dataversion repository"),
        (["cache", "warm", "nope"], 3, "unknown ref"),
    ],
)
def test_errors_are_one_clear_line(cli, args, code, needle):
    out = cli(*args, code=code)
    assert needle in out.stderr
    assert "Traceback" not in out.output
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1


def test_no_repo_given(tmp_path, monkeypatch):
    monkeypatch.delenv("DATAVERSION_REPO", raising=False)
    result = CliRunner().invoke(main, ["log"])
    assert result.exit_code == 2 and "pass --repo URL or set DATAVERSION_REPO" in result.stderr


@pytest.mark.parametrize("args", [["log", "nosuchref", "--debug"], ["--debug", "log", "nosuchref"]])
def test_debug_lets_the_exception_through(cli, args):
    result = CliRunner().invoke(main, args)
    assert isinstance(result.exception, NotFoundError) and result.stderr == ""


def test_debug_from_the_environment(cli, monkeypatch):
    monkeypatch.setenv("DATAVERSION_DEBUG", "1")
    assert isinstance(CliRunner().invoke(main, ["log", "nosuchref"]).exception, NotFoundError)


def _raising(exc: BaseException) -> click.Command:
    def callback():
        raise exc

    return DataversionCommand("boom", callback=callback)


@pytest.mark.parametrize(
    "exc, code, stderr",
    [
        (ConflictError("lost the race", hint="retry"), 4, "error: lost the race (retry)\n"),
        (BadInputError("no"), 2, "error: no\n"),
        (KeyboardInterrupt(), 130, "error: interrupted\n"),
        (BrokenPipeError(), 141, ""),
        (PermissionError(13, "Permission denied"), 1,
         "error: PermissionError: [Errno 13] Permission denied (re-run with --debug for a traceback)\n"),
        (ValueError("bad value"), 1, "error: ValueError: bad value (re-run with --debug for a traceback)\n"),
        (ModuleNotFoundError("No module named 'feast'", name="feast"), 2,
         "error: 'boom' needs the Python module 'feast', which is not installed\n"),
    ],
)
def test_each_failure_is_one_line_and_an_exit_code(exc, code, stderr):
    result = CliRunner().invoke(_raising(exc), [])
    assert (result.exit_code, result.stderr, result.stdout) == (code, stderr, "")


@pytest.mark.parametrize(
    "exc",
    [ValueError("bad value"), OSError("disk"), ModuleNotFoundError("x", name="feast"), NotFoundError("gone")],
)
def test_each_failure_has_its_traceback_with_debug(exc):
    result = CliRunner().invoke(_raising(exc), ["--debug"])
    assert result.exception is exc


def test_a_missing_module_of_our_own_is_a_bug_not_a_missing_extra():
    exc = ModuleNotFoundError("No module named 'pipelines.gone'", name="pipelines.gone")
    assert CliRunner().invoke(_raising(exc), []).exception is exc


def test_repo_location_store_options_only_for_s3(monkeypatch):
    monkeypatch.delenv("DATAVERSION_REPO", raising=False)
    assert RepoLocation("file:///tmp/r", "http://h:1", "a", "s").store_options() == {}
    assert RepoLocation("s3://b/p", "http://h:1", "a", "s").store_options() == {
        "endpoint": "http://h:1", "access_key": "a", "secret_key": "s"}
    with pytest.raises(BadInputError, match="DATAVERSION_REPO"):
        RepoLocation(None).require_url()


def test_url_for_workers_exports_the_s3_flags(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    import os

    assert RepoLocation("s3://b/p", "http://h:1", "a", None).url_for_workers() == "s3://b/p"
    assert (os.environ["AWS_ENDPOINT_URL"], os.environ["AWS_ENDPOINT_URL_S3"], os.environ["AWS_ACCESS_KEY_ID"]) == ("http://h:1", "http://h:1", "a")
    assert "AWS_SECRET_ACCESS_KEY" not in os.environ


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("15m", 900), ("1h", 3600), ("2d", 172800), ("500ms", 0.5), ("7", 7)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_parse_duration_rejects():
    for bad in ("soon", "-1s", "0"):
        with pytest.raises(BadInputError):
            parse_duration(bad)
    assert parse_duration("0", allow_zero=True) == 0
