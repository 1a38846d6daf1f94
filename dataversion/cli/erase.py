"""`dataversion erase` and `dataversion erasures`: deletion requests from the command line."""

from __future__ import annotations

import click

from .support import DataversionCommand, emit_json, json_option, progress_bar, repo_options


@click.command("erase", cls=DataversionCommand)
@click.argument("record_ids", nargs=-1)
@click.option("--source", "sources", multiple=True, metavar="PREFIX",
              help="Erase every record whose source starts with PREFIX, in any version (repeatable).")
@click.option("--reason", default="", help="Why (a deletion request's reference, 'poisoned sample'...): kept in the erasure record.")
@click.option("--resume", is_flag=True, help="Run every recorded erasure again: finishes what a killed erase or writer left.")
@json_option
@repo_options
def erase_command(record_ids, sources, reason, resume, as_json, repo):
    """Erase records from every version: payloads gone, ids kept, content denylisted.

    Commit ids, log and diff stay as they were; readers skip the erased records; a loader
    pinned to an affected commit yields every other sample in the same order. Run
    `dataversion gc` afterwards to delete the replaced objects from the store,
    `dataversion cache purge` to drop the cached copies of the replaced shards (a local
    shard cache keeps them otherwise), and `dataversion features erase --feature-repo DIR`
    for a Feast repository.
    """
    r = repo.open()
    if resume and not record_ids and not sources:
        with progress_bar(None, "erasing: commits searched", "commit") as bar:
            reports = r.resume_erasures(progress=bar)
        if as_json:
            return emit_json(reports)
        click.echo(f"ran {len(reports)} erasure(s) again: {sum(r['shards_rewritten'] for r in reports)} shard(s) rewritten, "
                   f"{sum(r['commits_repointed'] for r in reports)} commit(s) re-pointed")
        return None
    with progress_bar(None, "erasing: commits searched", "commit") as bar:
        report = r.erase(list(record_ids), source_prefixes=list(sources), reason=reason, progress=bar)
    if as_json:
        return emit_json(report)
    click.echo(f"erased {len(report['records'])} record(s) ({report['erasure'][:12]}): {report['shards_rewritten']} shard(s) "
               f"rewritten ({report['bytes_written']:,} bytes), {report['commits_repointed']} commit(s) re-pointed, "
               f"{report['seconds']} s")
    click.echo(f"held by {len(report['commits'])} commit(s); seen by {len(report['checkpoints'])} recorded checkpoint(s)")
    for c in report["checkpoints"]:
        click.echo(f"  checkpoint {c.get('run', '?')} step {c.get('step', '?')} on {str(c.get('commit', ''))[:12]}: {c.get('checkpoint') or c.get('location') or ''}")
    click.echo("next: `dataversion gc` deletes the replaced objects; `dataversion cache purge` drops their cached copies "
               "(`--cache-dir DIR`, on every machine with a shard cache); `dataversion features erase` updates a Feast repository")
    return None


@click.command("erasures", cls=DataversionCommand)
@json_option
@repo_options
def erasures_command(as_json, repo):
    """List the erasures recorded in the repository (what, why, which commits and checkpoints)."""
    records = repo.open().erasures()
    if as_json:
        return emit_json(records)
    if not records:
        click.echo("no erasures")
    for rec in records:
        click.echo(f"{rec['id'][:12]} {rec['state']:>6} {rec.get('finished') or rec['created']}  {len(rec['records'])} record(s), "
                   f"{len(rec.get('commits', []))} commit(s), {len(rec.get('checkpoints', []))} checkpoint(s): {rec['reason']}")
    return None
