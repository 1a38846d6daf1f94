"""The `dataversion` command: a thin shell over the Python API in `dataversion.repo`.

Every listing command has --json. Errors print one line (`error: ...`) and exit non-zero;
tracebacks only with --debug (or DATAVERSION_DEBUG=1). Progress bars go to stderr and only
when stderr is a terminal.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from ..errors import BadInputError, DataversionError
from .support import emit_json as _emit_json
from .support import exit_on_broken_pipe, parse_duration, repo_option
from .support import fail as _fail

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def handle_errors(fn: Callable) -> Callable:
    """Turn dataversion errors into one clear line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = kwargs.pop("debug", False) or os.environ.get("DATAVERSION_DEBUG") == "1"
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            exit_on_broken_pipe()
        except DataversionError as e:
            if debug:
                raise
            _fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except (OSError, ValueError) as e:
            if debug:
                raise
            _fail(f"{type(e).__name__}: {e} (re-run with --debug for a traceback)", 1)

    return click.option("--debug", is_flag=True, help="Show tracebacks.")(wrapper)


def repo_options(fn: Callable) -> Callable:
    """--repo and S3 connection flags (environment variables are the defaults)."""
    fn = click.option("--secret-key", envvar="AWS_SECRET_ACCESS_KEY", default=None, hidden=True)(fn)
    fn = click.option("--access-key", envvar="AWS_ACCESS_KEY_ID", default=None, help="S3 access key (default: AWS_ACCESS_KEY_ID).")(fn)
    fn = click.option("--endpoint-url", envvar="AWS_ENDPOINT_URL", default=None, help="S3 endpoint, e.g. http://127.0.0.1:9000 (default: AWS_ENDPOINT_URL).")(fn)
    fn = repo_option(fn)
    return fn


def store_options(repo_url: str | None, endpoint_url: str | None, access_key: str | None, secret_key: str | None) -> tuple[str, dict[str, Any]]:
    if not repo_url:
        raise BadInputError("no repository given", hint="pass --repo URL or set DATAVERSION_REPO")
    options: dict[str, Any] = {}
    if repo_url.startswith(("s3://", "minio://")):
        options = {"endpoint": endpoint_url, "access_key": access_key, "secret_key": secret_key}
    return repo_url, options


def open_repo(repo_url, endpoint_url, access_key, secret_key):
    from ..repo import Repo

    url, options = store_options(repo_url, endpoint_url, access_key, secret_key)
    return Repo.open(url, **options)


def progress_bar(total: int | None, desc: str, unit: str = "it"):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, leave=False, dynamic_ncols=True)


class _Main(click.Group):
    """The root group: a DataversionError from any subcommand (including the optional ones
    registered below) becomes one line on stderr and its exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DataversionError as e:
            if ctx.meta.get("dataversion.debug") or os.environ.get("DATAVERSION_DEBUG") == "1":
                raise
            _fail(str(e), e.exit_code)


@click.group(cls=_Main, context_settings=CONTEXT)
@click.version_option(package_name="dataversion")
@click.option("--debug", "debug_all", is_flag=True, help="Show tracebacks for every command.")
@click.pass_context
def main(ctx: click.Context, debug_all: bool) -> None:
    """dataversion: Git-like versioned datasets for training.

    \b
    Quick start:
      dataversion init --repo ./repo
      dataversion add ./raw -m "first import" --repo ./repo
      dataversion log --repo ./repo
    Set DATAVERSION_REPO to skip --repo.
    """
    ctx.meta["dataversion.debug"] = debug_all


# --------------------------------------------------------------------------- init / add / rm
@main.command()
@repo_options
@handle_errors
def init(repo_url, endpoint_url, access_key, secret_key):
    """Create a repository (an existing one is left unchanged)."""
    from ..repo import Repo

    url, options = store_options(repo_url, endpoint_url, access_key, secret_key)
    repo = Repo.init(url, **options)
    click.echo(f"initialized dataversion repository at {repo.url}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-m", "--message", default="", help="Commit message.")
@click.option("-b", "--branch", default="main", show_default=True)
@click.option("--sync", is_flag=True, help="Make the snapshot equal to PATHS: remove records no longer there.")
@click.option("--text-field", default="text", show_default=True, help="JSONL field holding the text.")
@click.option("--json", "as_json", is_flag=True)
@repo_options
@handle_errors
def add(paths, message, branch, sync, text_field, as_json, repo_url, endpoint_url, access_key, secret_key):
    """Commit the records under PATHS: one per file, one per JSONL line."""
    repo = open_repo(repo_url, endpoint_url, access_key, secret_key)
    with progress_bar(None, "reading files", "file") as bar:
        result = repo.add(list(paths), branch=branch, message=message, sync=sync, text_field=text_field, progress=bar)
    if as_json:
        return _emit_json(result.to_dict())
    for s in result.skipped:
        click.echo(f"skipped {s['source']}: {s['message']}", err=True)
    if result.commit_id is None:
        click.echo(f"nothing new: {result.already_present} record(s) already on {branch}")
    else:
        click.echo(
            f"[{branch} {result.commit_id[:12]}] +{result.added} -{result.removed} records "
            f"({result.already_present} already present, {result.bytes_written:,} bytes in {result.shards_written} new shard(s))"
        )


@main.command()
@click.argument("record_ids", nargs=-1)
@click.option("--source", "sources", multiple=True, help="Remove records whose source starts with this prefix (repeatable).")
@click.option("-m", "--message", default="")
@click.option("-b", "--branch", default="main", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@repo_options
@handle_errors
def rm(record_ids, sources, message, branch, as_json, repo_url, endpoint_url, access_key, secret_key):
    """Remove records by id or by source prefix (a new commit; history keeps them)."""
    repo = open_repo(repo_url, endpoint_url, access_key, secret_key)
    result = repo.rm(branch=branch, ids=list(record_ids), source_prefixes=list(sources), message=message)
    if as_json:
        return _emit_json(result.to_dict())
    if result.commit_id is None:
        click.echo("nothing removed: no record matched")
    else:
        click.echo(f"[{branch} {result.commit_id[:12]}] -{result.removed} records")


# --------------------------------------------------------------------------- history
@main.command()
@click.argument("ref", default="main")
@click.option("-n", "max_count", type=int, default=None, help="Show at most N commits.")
@click.option("--json", "as_json", is_flag=True)
@repo_options
@handle_errors
def log(ref, max_count, as_json, repo_url, endpoint_url, access_key, secret_key):
    """Commits reachable from REF (first parents), newest first."""
    repo = open_repo(repo_url, endpoint_url, access_key, secret_key)
    commits = repo.log(ref, max_count)
    pins = _pinned_commits(repo)
    for c in commits:
        c["pinned"] = c["id"] in pins
    if as_json:
        return _emit_json(commits)
    for c in commits:
        counts = c["records"]
        mods = ", ".join(f"{k} {v}" for k, v in counts["by_modality"].items())
        pin = "  [pinned]" if c["pinned"] else ""
        click.echo(f"{c['id'][:12]}  {c['time'][:19]}  {counts['count']:>9,} records ({mods})  {c['message']}{pin}")


def _pinned_commits(repo) -> set[str]:
    pins: set[str] = set()
    for info in repo.store.list("pins/"):
        try:
            pins.update(json.loads(repo.store.get(info.key)).get("commits", []))
        except (DataversionError, ValueError):
            continue
    return pins


@main.command()
@click.argument("ref", default="main")
@click.option("--json", "as_json", is_flag=True)
@repo_options
@handle_errors
def show(ref, as_json, repo_url, endpoint_url, access_key, secret_key):
    """One commit: its fields, record counts and shards."""
    repo = open_repo(repo_url, endpoint_url, access_key, secret_key)
    d = repo.show(ref)
    if as_json:
        return _emit_json(d)
    click.echo(f"commit   {d['id']}")
    if d["refs"]:
        click.echo(f"refs     {', '.join(d['refs'])}")
    click.echo(f"parents  {' '.join(d['parents']) or '(root)'}")
    click.echo(f"author   {d['author']}")
    click.echo(f"time     {d['time']}")
    click.echo(f"records  {d['records']['count']:,} {json.dumps(d['records']['by_modality'])}")
    click.echo(f"counts   {json.dumps(d['counts'])}")
    click.echo(f"shards   {d['shards']} (manifest {d['manifest']})")
    if d["provenance"]:
        click.echo(f"provenance {json.dumps(d['provenance'])}")
    click.echo(f"\n    {d['message']}")


@main.command()
@click.argument("ref", default="main")
@click.option("--shards", is_flag=True, help="List shards instead of records.")
@click.option("--json", "as_json", is_flag=True)
@repo_options
@handle_errors
def ls(ref, shards, as_json, repo_url, endpoint_url, access_key, secret_key):
    """Records (or shards) of a snapshot."""
    repo = open_repo(repo_url, endpoint_url, access_key, secret_key)
    if shards:
        rows = repo.ls_shards(ref)
        if as_json:
            return _emit_json(rows)
        for s in rows:
            click.echo(f"{s['id']}  {s['live_rows']:>8,}/{s['rows']:<8,} rows  {s['size']:>12,} bytes")
        return
    records = repo.ls(ref, columns=("record_id", "modality", "source", "label", "size"))
    if as_json:
        # stream a JSON list without holding every record in memory
        click.echo("[", nl=False)
        for i, r in enumerate(records):
            click.echo(("," if i else "") + "\n  " + json.dumps(r), nl=False)
        click.echo("\n]")
        return
    for r in records:
        click.echo(f"{r['record_id']}  {r['modality']:<6} {r['size'] or 0:>10,}  {r['source'] or ''}" + (f"  [{r['label']}]" if r["label"] else ""))


@main.command()
@click.argument("a")
@click.argument("b", default="main")
@click.option("--records", is_flag=True, help="List the ids added and removed.")
@click.option("--json", "as_json", is_flag=True)
@repo_options
@handle_errors
def diff(a, b, records, as_json, repo_url, endpoint_url, access_key, secret_key):
    """Records added and removed from A to B."""
    repo = open_repo(repo_url, endpoint_url, access_key, secret_key)
    d = repo.diff(a, b, records=records)
    if as_json:
        return _emit_json(d)
    click.echo(f"{d['from'][:12]}..{d['to'][:12]}: +{d['added']:,} -{d['removed']:,} records")
    for mod, c in d["by_modality"].items():
        click.echo(f"  {mod:<7} +{c['added']:,} -{c['removed']:,}")
    if records:
        for h in d["records"]["added"]:
            click.echo(f"+ {h}")
        for h in d["records"]["removed"]:
            click.echo(f"- {h}")


@main.command()
@click.argument("ref")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True)
@repo_options
@handle_errors
def checkout(ref, directory, as_json, repo_url, endpoint_url, access_key, secret_key):
    """Write the records of REF as files under DIRECTORY (never outside it)."""
    repo = open_repo(repo_url, endpoint_url, access_key, secret_key)
    with progress_bar(None, "writing records", "rec") as bar:
        d = repo.checkout(ref, directory, progress=bar)
    if as_json:
        return _emit_json(d)
    click.echo(f"checked out {d['records']:,} records of {d['commit'][:12]} into {d['directory']} ({d['files']:,} files)")


# --------------------------------------------------------------------------- refs
@main.command()
@click.argument("name", required=False)
@click.argument("start", required=False, default="main")
@click.option("-d", "--delete", is_flag=True, help="Delete branch NAME.")
@click.option("--json", "as_json", is_flag=True)
@repo_options
@handle_errors
def branch(name, start, delete, as_json, repo_url, endpoint_url, access_key, secret_key):
    """List branches, create NAME at START, or delete NAME with -d."""
    repo = open_repo(repo_url, endpoint_url, access_key, secret_key)
    if name and delete:
        old = repo.delete_branch(name)
        return click.echo(f"deleted branch {name} (was {old[:12]})")
    if name:
        cid = repo.create_branch(name, start)
        return click.echo(f"created branch {name} at {cid[:12]}")
    branches = repo.branches()
    if as_json:
        return _emit_json([{"name": k, "commit": v} for k, v in sorted(branches.items())])
    for k, v in sorted(branches.items()):
        click.echo(f"{k:<24} {v[:12]}")


@main.command()
@click.argument("name", required=False)
@click.argument("ref", required=False, default="main")
@click.option("--json", "as_json", is_flag=True)
@repo_options
@handle_errors
def tag(name, ref, as_json, repo_url, endpoint_url, access_key, secret_key):
    """List tags, or create tag NAME at REF (tags never move)."""
    repo = open_repo(repo_url, endpoint_url, access_key, secret_key)
    if name:
        cid = repo.create_tag(name, ref)
        return click.echo(f"tagged {cid[:12]} as {name}")
    tags = repo.tags()
    if as_json:
        return _emit_json([{"name": k, "commit": v} for k, v in sorted(tags.items())])
    for k, v in sorted(tags.items()):
        click.echo(f"{k:<24} {v[:12]}")


@main.command()
@click.argument("branch_name")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@repo_options
@handle_errors
def reset(branch_name, ref, as_json, repo_url, endpoint_url, access_key, secret_key):
    """Move BRANCH to REF (rollback). The old tip stays in the reflog."""
    repo = open_repo(repo_url, endpoint_url, access_key, secret_key)
    old, new = repo.reset(branch_name, ref)
    if as_json:
        return _emit_json({"branch": branch_name, "old": old, "new": new})
    click.echo(f"{branch_name}: {old[:12] if old else '(none)'} -> {new[:12]} (undo with `dataversion reset {branch_name} {old[:12] if old else ''}`)")


@main.command()
@click.argument("branch_name", required=False)
@click.option("--json", "as_json", is_flag=True)
@repo_options
@handle_errors
def reflog(branch_name, as_json, repo_url, endpoint_url, access_key, secret_key):
    """Every ref update (of one branch, or all), oldest first."""
    repo = open_repo(repo_url, endpoint_url, access_key, secret_key)
    entries = repo.reflog(branch_name)
    if as_json:
        return _emit_json(entries)
    import datetime as dt

    for e in entries:
        when = dt.datetime.fromtimestamp(e["time"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{when}  {e['ref']:<22} {(e['old'] or '-')[:12]:>12} -> {(e['new'] or '-')[:12]:<12} {e['reason']}")


@main.command()
@click.argument("ref")
@click.option("-b", "--branch", default="main", show_default=True)
@click.option("-m", "--message", default="")
@click.option("--json", "as_json", is_flag=True)
@repo_options
@handle_errors
def revert(ref, branch, message, as_json, repo_url, endpoint_url, access_key, secret_key):
    """A new commit on BRANCH that undoes what REF changed."""
    repo = open_repo(repo_url, endpoint_url, access_key, secret_key)
    result = repo.revert(ref, branch=branch, message=message)
    if as_json:
        return _emit_json(result.to_dict())
    if result.commit_id is None:
        click.echo("nothing to revert: the branch already lacks those changes")
    else:
        click.echo(f"[{branch} {result.commit_id[:12]}] reverted {ref}: +{result.added} -{result.removed} records")


# --------------------------------------------------------------------------- maintenance
@main.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.option("--grace", default="1h", show_default=True, help="Keep unreachable objects younger than this (s, m, h, d).")
@click.option("--expire-reflog", default=None, metavar="AGE", help="First drop reflog entries older than AGE (e.g. 90d); default: keep all.")
@click.option("--json", "as_json", is_flag=True)
@repo_options
@handle_errors
def gc(dry_run, grace, expire_reflog, as_json, repo_url, endpoint_url, access_key, secret_key):
    """Delete objects no ref, reflog entry or pinned checkpoint can reach."""
    repo = open_repo(repo_url, endpoint_url, access_key, secret_key)
    d = repo.gc(
        dry_run=dry_run,
        grace_seconds=parse_duration(grace, allow_zero=True),
        expire_reflog_seconds=parse_duration(expire_reflog, allow_zero=True) if expire_reflog else None,
    )
    if as_json:
        return _emit_json(d)
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {d['deleted']} object(s), {d['bytes']:,} bytes; kept {d['kept_young']} unreachable object(s) younger than {grace}")


@main.command()
@click.argument("ref", required=False)
@click.option("--all", "all_refs", is_flag=True, help="Every commit reachable from any ref, reflog entry or pin.")
@click.option("--json", "as_json", is_flag=True)
@repo_options
@handle_errors
def verify(ref, all_refs, as_json, repo_url, endpoint_url, access_key, secret_key):
    """Re-hash every object and payload; name each corrupt or missing one."""
    repo = open_repo(repo_url, endpoint_url, access_key, secret_key)
    if ref and all_refs:
        raise BadInputError("give either REF or --all")
    with progress_bar(None, "verifying shards", "shard") as bar:
        d = repo.verify(None if all_refs or not ref else ref, progress=bar)
    if as_json:
        _emit_json(d)
    else:
        c = d["checked"]
        for b in d["bad"]:
            click.echo(f"BAD {b['object']}: {b['problem']}")
        click.echo(f"{'ok' if d['ok'] else 'FAILED'}: {c['commits']} commits, {c['manifests']} manifests, {c['shards']} shards, {c['records']:,} records checked; {len(d['bad'])} bad")
    if not d["ok"]:
        sys.exit(5)


def _register_optional_commands() -> None:
    """Commands whose heavy dependencies load only when they run."""
    try:
        from pipelines.cli.ingest import ingest_command, rejects_command
    except ImportError:
        pass
    else:
        main.add_command(ingest_command, "ingest")
        main.add_command(rejects_command, "rejects")
    try:
        from pipelines.cli.runner import runner_command, runs_command
    except ImportError:
        pass
    else:
        main.add_command(runner_command, "runner")
        main.add_command(runs_command, "runs")
    from .lineage import inspect_command, lineage_command, unpin_command

    main.add_command(inspect_command, "inspect")
    main.add_command(lineage_command, "lineage")
    main.add_command(unpin_command, "unpin")
    try:
        from pipelines.cli.features import features_group
    except ImportError:
        pass
    else:
        main.add_command(features_group, "features")
    try:
        from .cache import cache_group
    except ImportError:
        pass
    else:
        main.add_command(cache_group, "cache")


_register_optional_commands()
