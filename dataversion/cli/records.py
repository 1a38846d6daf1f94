"""`dataversion init | add | rm | checkout`: create a repository, commit and remove records,
write a snapshot out as files."""

from __future__ import annotations

import click

from ..errors import NotFoundError
from ..hashing import ID_HASHES
from .support import DataversionCommand, emit_json, json_option, progress_bar, repo_options

SHOWN_DUPLICATES = 10  # duplicate lines `add` prints; the rest are counted


@click.command("init", cls=DataversionCommand)
@click.option("--create-bucket", is_flag=True, help="Create the S3 bucket if it does not exist.")
@click.option("--id-hash", type=click.Choice(ID_HASHES), default=None,
              help="Record-id hash, fixed for the repository's life: xxh3-128 (default, fast) or blake3 "
              "(cryptographic: crafted inputs cannot collide ids; see the threat model).")
@repo_options
def init_command(repo, create_bucket, id_hash):
    """Create a repository (an existing one is left unchanged; --id-hash must then match it)."""
    try:
        repo.open()
        existed = True
    except NotFoundError:
        existed = False
    r = repo.init(create_bucket=create_bucket, id_hash=id_hash)
    if existed:
        click.echo(f"a dataversion repository is already at {r.url} (record ids: {r.id_hash}): left unchanged")
    else:
        click.echo(f"initialized dataversion repository at {r.url} (record ids: {r.id_hash})")


@click.command("add", cls=DataversionCommand)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-m", "--message", default="", help="Commit message.")
@click.option("-b", "--branch", default="main", show_default=True)
@click.option("--sync", is_flag=True, help="Make the snapshot equal to PATHS: remove records no longer there.")
@click.option("--text-field", default="text", show_default=True, help="JSONL field holding the text.")
@json_option
@repo_options
def add_command(paths, message, branch, sync, text_field, as_json, repo):
    """Commit the records under PATHS: one per file, one per JSONL line."""
    r = repo.open()
    with progress_bar(None, "reading files", "file") as bar:
        result = r.add(list(paths), branch=branch, message=message, sync=sync, text_field=text_field, progress=bar)
    if as_json:
        return emit_json(result.to_dict())
    for s in result.skipped:
        click.echo(f"skipped {s['source']}: {s['message']}", err=True)
    dups = result.duplicates
    for d in dups[:SHOWN_DUPLICATES]:
        click.echo(f"duplicate {d['source']}: the same content as another input (record {d['duplicate_of'][:12]}), stored once", err=True)
    if len(dups) > SHOWN_DUPLICATES:
        click.echo(f"... and {len(dups) - SHOWN_DUPLICATES:,} more duplicates (`dataversion duplicates {branch}` lists them all)", err=True)
    dup_s = f", {len(dups):,} duplicate(s) stored once" if dups else ""
    if result.commit_id is None:
        click.echo(f"nothing new: {result.already_present} record(s) already on {branch}{dup_s}")
    else:
        click.echo(
            f"[{branch} {result.commit_id[:12]}] +{result.added} -{result.removed} records "
            f"({result.already_present} already present{dup_s}, {result.bytes_written:,} bytes in {result.shards_written} new shard(s))"
        )


@click.command("rm", cls=DataversionCommand)
@click.argument("record_ids", nargs=-1)
@click.option("--source", "sources", multiple=True, help="Remove records whose source starts with this prefix (repeatable).")
@click.option("-m", "--message", default="")
@click.option("-b", "--branch", default="main", show_default=True)
@json_option
@repo_options
def rm_command(record_ids, sources, message, branch, as_json, repo):
    """Remove records by id or by source prefix (a new commit; history keeps them)."""
    result = repo.open().rm(branch=branch, ids=list(record_ids), source_prefixes=list(sources), message=message)
    if as_json:
        return emit_json(result.to_dict())
    if result.commit_id is None:
        click.echo("nothing removed: no record matched")
    else:
        click.echo(f"[{branch} {result.commit_id[:12]}] -{result.removed} records")


@click.command("checkout", cls=DataversionCommand)
@click.argument("ref")
@click.argument("directory", type=click.Path(file_okay=False))
@json_option
@repo_options
def checkout_command(ref, directory, as_json, repo):
    """Write the records of REF as files under DIRECTORY (never outside it)."""
    r = repo.open()
    with progress_bar(None, "writing records", "rec") as bar:
        d = r.checkout(ref, directory, progress=bar)
    if as_json:
        return emit_json(d)
    click.echo(f"checked out {d['records']:,} records of {d['commit'][:12]} into {d['directory']} ({d['files']:,} files)")
    for r_ in d["renamed"]:
        click.echo(f"warning: {r_['source']} is the source of several records; record {r_['record_id'][:12]} written as {r_['path']}", err=True)
