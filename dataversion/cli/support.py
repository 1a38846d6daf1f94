"""What every `dataversion` subcommand shares: the one error wrapper, the shared options,
JSON output, the progress bar, durations.

Every command is a `DataversionCommand` (groups are `DataversionGroup`, whose subcommands
are `DataversionCommand`s): its `invoke` is the only place where exceptions become exit codes.

    DataversionError        `error: <message>` on stderr, the error's exit code
    missing optional module `error: 'CMD' needs the X extra: pip install 'dataversion[X]'`, 2
    BrokenPipeError         nothing (the reader went away, as in `| head`), 141
    KeyboardInterrupt       `error: interrupted`, 130
    OSError, ValueError     one line naming the type, with a hint to use --debug, 1

`--debug` (on every command, and on the root group) or DATAVERSION_DEBUG=1 lets the exception
through instead, with its traceback. Imports only click and the core, so any command module
(core or optional) can use it without importing `dataversion.cli`.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click

from ..errors import BadInputError, DataversionError

DEBUG_KEY = "dataversion.debug"
_OWN_PACKAGES = ("dataversion", "pipelines")


# --------------------------------------------------------------------------- errors
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


def debug_requested(ctx: click.Context | None) -> bool:
    """--debug on this command or the root group, or DATAVERSION_DEBUG=1."""
    return bool(ctx is not None and ctx.meta.get(DEBUG_KEY)) or os.environ.get("DATAVERSION_DEBUG") == "1"


def missing_dependency_error(command: str, extras: Sequence[str], module: str | None) -> BadInputError:
    """The error for a command whose optional dependency is not installed.

    With the extras the command's entry point declares: names them and the pip command;
    without (a command run outside the `dataversion` group): names the missing module.
    """
    if extras:
        noun = "extra" if len(extras) == 1 else "extras"
        return BadInputError(f"{command!r} needs the {' and '.join(extras)} {noun}: pip install 'dataversion[{','.join(extras)}]'")
    return BadInputError(f"{command!r} needs the Python module {module!r}, which is not installed")


def is_missing_dependency(e: ModuleNotFoundError) -> bool:
    """A third-party module is absent (an absent module of our own packages is a bug)."""
    return (e.name or "").split(".")[0] not in _OWN_PACKAGES


def _top_level_command(ctx: click.Context) -> tuple[str, Sequence[str]]:
    """(name under the root group, extras its registry entry declares)."""
    while ctx.parent is not None and ctx.parent.parent is not None:
        ctx = ctx.parent
    name = ctx.info_name or ctx.command.name or "?"
    extras_of = getattr(ctx.find_root().command, "extras_of", None) if ctx.parent is not None else None
    return name, (extras_of(name) if extras_of else ())


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[DEBUG_KEY] = True


class DataversionCommand(click.Command):
    """A command with `--debug` whose exceptions become one line and an exit code (see the
    module docstring): the one error wrapper of the CLI."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(click.Option(["--debug"], is_flag=True, expose_value=False, callback=_set_debug,
                                        help="Show tracebacks (also: DATAVERSION_DEBUG=1)."))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            exit_on_broken_pipe()
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except DataversionError as e:
            if debug_requested(ctx):
                raise
            fail(str(e), e.exit_code)
        except ModuleNotFoundError as e:
            if debug_requested(ctx) or not is_missing_dependency(e):
                raise
            name, extras = _top_level_command(ctx)
            err = missing_dependency_error(name, extras, e.name)
            fail(str(err), err.exit_code)
        except (OSError, ValueError) as e:
            if debug_requested(ctx):
                raise
            fail(f"{type(e).__name__}: {e} (re-run with --debug for a traceback)", 1)


class DataversionGroup(click.Group):
    """A command group whose subcommands are `DataversionCommand`s (and subgroups its kind)."""

    command_class = DataversionCommand
    group_class = type


# --------------------------------------------------------------------------- repository
@dataclass(frozen=True)
class RepoLocation:
    """Where the repository is: --repo and the S3 connection flags of one command line."""

    url: str | None
    endpoint_url: str | None = None
    access_key: str | None = None
    secret_key: str | None = None

    def require_url(self) -> str:
        """The URL (--repo, else DATAVERSION_REPO). BadInputError if neither is set."""
        url = self.url or os.environ.get("DATAVERSION_REPO")
        if not url:
            raise BadInputError("no repository given", hint="pass --repo URL or set DATAVERSION_REPO")
        return url

    def store_options(self) -> dict[str, Any]:
        """Keyword arguments for `Repo.open`/`Repo.init` (the S3 flags, for S3 URLs only)."""
        if self.require_url().startswith(("s3://", "minio://")):
            return {"endpoint": self.endpoint_url, "access_key": self.access_key, "secret_key": self.secret_key}
        return {}

    def open(self, *, any_format: bool = False):
        """`Repo.open` of this location. NotFoundError if there is no repository; FormatError
        for another format unless `any_format` (`upgrade`)."""
        from ..repo import Repo

        return Repo.open(self.require_url(), any_format=any_format, **self.store_options())

    def init(self, *, create_bucket: bool = False, id_hash: str | None = None):
        """`Repo.init` of this location (an existing repository is opened unchanged)."""
        from ..repo import Repo

        return Repo.init(self.require_url(), create_bucket=create_bucket, id_hash=id_hash, **self.store_options())

    def url_for_workers(self) -> str:
        """The URL, with the S3 flags exported to the environment variables they default from.

        For commands that hand the repository to other processes by URL (Beam workers, the
        runner's child processes): the environment is how the flags reach them.
        """
        url = self.require_url()
        if url.startswith(("s3://", "minio://")):
            for names, value in ((("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"), self.endpoint_url),
                                 (("AWS_ACCESS_KEY_ID",), self.access_key),
                                 (("AWS_SECRET_ACCESS_KEY",), self.secret_key)):
                if value:
                    os.environ.update(dict.fromkeys(names, value))
        return url


def repo_options(fn: Callable) -> Callable:
    """--repo and the S3 flags (environment variables are the defaults), handed to the
    command as one `repo: RepoLocation` argument."""

    @functools.wraps(fn)
    def wrapper(*args: Any, repo_url, endpoint_url, access_key, secret_key, **kwargs: Any) -> Any:
        return fn(*args, repo=RepoLocation(repo_url, endpoint_url, access_key, secret_key), **kwargs)

    wrapper = click.option("--secret-key", envvar="AWS_SECRET_ACCESS_KEY", default=None, hidden=True)(wrapper)
    wrapper = click.option("--access-key", envvar="AWS_ACCESS_KEY_ID", default=None,
                           help="S3 access key (default: AWS_ACCESS_KEY_ID; the secret: AWS_SECRET_ACCESS_KEY).")(wrapper)
    wrapper = click.option("--endpoint-url", envvar="AWS_ENDPOINT_URL", default=None,
                           help="S3 endpoint, e.g. http://127.0.0.1:9000 (default: AWS_ENDPOINT_URL).")(wrapper)
    return click.option("--repo", "repo_url", envvar="DATAVERSION_REPO", default=None, metavar="URL",
                        help="Repository: file://PATH, a path, or s3://BUCKET/PREFIX (default: DATAVERSION_REPO).")(wrapper)


# --------------------------------------------------------------------------- output
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def emit_json(value: Any, *, indent: int | None = 2, sort_keys: bool = False) -> None:
    """Print `value` as JSON on stdout (non-JSON values as their str)."""
    click.echo(json.dumps(value, indent=indent, sort_keys=sort_keys, default=str))


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def shown(name: str | None) -> str:
    """A source path or name for line-oriented output: as it is, or, where it holds a
    control character (a newline in a file name), quoted with escapes as git quotes such
    paths, so every record stays on one line. `--json` carries the name unchanged."""
    if not name:
        return ""
    return json.dumps(name, ensure_ascii=False) if _CONTROL.search(name) else name


def progress_bar(total: int | None, desc: str, unit: str = "it"):
    """A tqdm bar on stderr, shown only when stderr is a terminal.

    No tqdm monitor thread: a daemon thread still alive at interpreter shutdown can end the
    process with `terminate called without an active exception` (rc 134, issue 17)."""
    from tqdm import tqdm

    tqdm.monitor_interval = 0
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, leave=False, dynamic_ncols=True)


# --------------------------------------------------------------------------- durations
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str, *, allow_zero: bool = False) -> float:
    """Seconds from "30s", "15m", "1h", "2d", "500ms" or a bare number of seconds.

    BadInputError for anything else, and for zero unless `allow_zero`.
    """
    m = _DURATION.match(str(text))
    if not m or (float(m.group(1)) <= 0 and not (allow_zero and float(m.group(1)) == 0)):
        raise BadInputError(f"invalid duration {text!r}", hint="use e.g. 30s, 15m, 1h, 2d, 500ms")
    return float(m.group(1)) * _UNIT_S[m.group(2)]
