"""What every `dataversion` subcommand shares: one-line errors, JSON output, the repository
option, durations. Imports only click and the core, so optional command modules (cache,
lineage, features, runner, ingest) can use it without importing `dataversion.cli`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import click

from ..errors import BadInputError, DataversionError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def debug_enabled(debug: bool = False) -> bool:
    return debug or os.environ.get("DATAVERSION_DEBUG") == "1"


def fail(message: str, code: int) -> None:
    """Print `error: message` on stderr and exit with `code`."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def exit_on_broken_pipe() -> None:
    """The reader went away (`dataversion ls | head`): stop quietly, like other Unix tools."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's final flush must not fail again
    except OSError:
        pass
    sys.exit(141)


def run_command(fn: Callable[[], Any], debug: bool = False) -> Any:
    """Run a command body: dataversion errors (and OS errors) become one line and an exit code."""
    try:
        return fn()
    except BrokenPipeError:
        exit_on_broken_pipe()
    except DataversionError as e:
        if debug_enabled(debug):
            raise
        fail(str(e), e.exit_code)
    except OSError as e:
        if debug_enabled(debug):
            raise
        fail(f"{type(e).__name__}: {e} (re-run with --debug for a traceback)", 1)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def require_repo_url(repo_url: str | None) -> str:
    """The repository URL from --repo, else DATAVERSION_REPO; a clear error if neither."""
    url = repo_url or os.environ.get("DATAVERSION_REPO")
    if not url:
        raise BadInputError("no repository given", hint="pass --repo URL or set DATAVERSION_REPO")
    return url


def open_repo(repo_url: str | None, **store_options: Any):
    """`Repo.open` of --repo / DATAVERSION_REPO."""
    from ..repo import Repo

    return Repo.open(require_repo_url(repo_url), **store_options)


repo_option = click.option(
    "--repo", "repo_url", envvar="DATAVERSION_REPO", default=None, metavar="URL",
    help="Repository: file://PATH, a path, or s3://BUCKET/PREFIX (default: DATAVERSION_REPO).",
)


def parse_duration(text: str, *, allow_zero: bool = False) -> float:
    """Seconds from "30s", "15m", "1h", "2d", "500ms" or a bare number of seconds."""
    m = _DURATION.match(str(text))
    if not m or (float(m.group(1)) <= 0 and not (allow_zero and float(m.group(1)) == 0)):
        raise BadInputError(f"invalid duration {text!r}", hint="use e.g. 30s, 15m, 1h, 2d, 500ms")
    return float(m.group(1)) * _UNIT_S[m.group(2)]
