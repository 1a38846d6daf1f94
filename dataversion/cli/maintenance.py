"""`dataversion gc | verify`: collect unreachable objects, check every object's hash."""

from __future__ import annotations

import sys

import click

from ..errors import BadInputError
from .support import (
    DataversionCommand,
    emit_json,
    json_option,
    parse_duration,
    progress_bar,
    repo_options,
)

VERIFY_FAILED_EXIT = 5  # the exit code of CorruptObjectError: `verify` found corruption


@click.command("gc", cls=DataversionCommand)
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.option("--grace", default="14d", show_default=True, help="Keep unreachable objects younger than this (s, m, h, d); writers in flight are protected whatever it says.")
@click.option("--expire-reflog", default=None, metavar="AGE", help="First drop reflog entries older than AGE (e.g. 90d); default: keep all.")
@json_option
@repo_options
def gc_command(dry_run, grace, expire_reflog, as_json, repo):
    """Delete objects no ref, reflog entry or pinned checkpoint can reach."""
    grace_s = parse_duration(grace, allow_zero=True)
    expire_s = parse_duration(expire_reflog, allow_zero=True) if expire_reflog else None
    d = repo.open().gc(dry_run=dry_run, grace_seconds=grace_s, expire_reflog_seconds=expire_s)
    if as_json:
        return emit_json(d)
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {d['deleted']} object(s), {d['bytes']:,} bytes; kept {d['kept_young']} unreachable object(s) younger than {grace} or written by a writer in flight")


@click.command("verify", cls=DataversionCommand)
@click.argument("ref", required=False)
@click.option("--all", "all_refs", is_flag=True, help="Every commit reachable from any ref, reflog entry or pin.")
@json_option
@repo_options
def verify_command(ref, all_refs, as_json, repo):
    """Re-hash every object and payload; name each corrupt or missing one (exit 5 if any)."""
    if ref and all_refs:
        raise BadInputError("give either REF or --all")
    r = repo.open()
    with progress_bar(None, "verifying shards", "shard") as bar:
        d = r.verify(None if all_refs or not ref else ref, progress=bar)
    if as_json:
        emit_json(d)
    else:
        c = d["checked"]
        for b in d["bad"]:
            click.echo(f"BAD {b['object']}: {b['problem']}")
        click.echo(f"{'ok' if d['ok'] else 'FAILED'}: {c['commits']} commits, {c['manifests']} manifests, {c['shards']} shards, {c['records']:,} records checked; {len(d['bad'])} bad")
    if not d["ok"]:
        sys.exit(VERIFY_FAILED_EXIT)
