"""`dataversion gc | verify | upgrade | repack`: collect unreachable objects, check every
object's hash, convert a format-1 repository, rewrite the packing of commits."""

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
        for n in d.get("notes", []):
            click.echo(f"note {n['object']}: {n['note']}")
        click.echo(f"{'ok' if d['ok'] else 'FAILED'}: {c['commits']} commits, {c['tree_nodes']} tree nodes, {c['packings']} packings, {c['shards']} shards, {c['records']:,} records checked; {len(d['bad'])} bad")
    if not d["ok"]:
        sys.exit(VERIFY_FAILED_EXIT)


@click.command("upgrade", cls=DataversionCommand)
@json_option
@repo_options
def upgrade_command(as_json, repo):
    """Convert a format-1 repository (dataversion 0.1) to format 2 in place.

    Keeps messages, refs, reflog, lineage and pins; commit ids change once: the old -> new
    map is printed and kept in the repository, so old ids (checkpoints) still resolve."""
    from ..porcelain.upgrade import upgrade

    with progress_bar(None, "upgrading commits", "commit") as bar:
        d = upgrade(repo.open(any_format=True), progress=bar)
    if as_json:
        return emit_json(d)
    if d.get("already"):
        click.echo(f"already in format {d['to']}")
        return
    for old, new in d["commits"].items():
        click.echo(f"{old} -> {new}")
    click.echo(f"upgraded format {d['from']} -> {d['to']}: {len(d['commits'])} commit(s); the map is kept in upgrade/format1-ids.json")


@click.command("repack", cls=DataversionCommand)
@click.argument("refs", nargs=-1)
@click.option("--target-size", default=None, type=int, metavar="BYTES", help="Target shard size in bytes (default 32 MiB).")
@json_option
@repo_options
def repack_command(refs, target_size, as_json, repo):
    """Rewrite the shards of REFs (default: every branch head) into id-range shards of the
    target size and re-point their packing. Commit ids, log, diff, order and lineage stay."""
    from ..porcelain.repack import repack

    kwargs = {"target_bytes": target_size} if target_size else {}
    with progress_bar(None, "repacking records", "rec") as bar:
        d = repack(repo.open(), list(refs) or None, progress=bar, **kwargs)
    if as_json:
        return emit_json(d)
    click.echo(f"repacked {d['roots']} snapshot(s): {d['shards_before']} -> {d['shards_after']} shards, "
               f"{d['bytes_before']:,} -> {d['bytes_after']:,} bytes in {d['seconds']:.2f}s "
               f"(old shards are garbage for gc)")
