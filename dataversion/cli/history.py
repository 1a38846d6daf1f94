"""`dataversion log | show | ls | diff`: read the history and the snapshots."""

from __future__ import annotations

import itertools
import json

import click

from ..errors import BadInputError, DataversionError
from ..porcelain.branches import resolve_ref
from .support import DataversionCommand, emit_json, json_option, repo_options, shown

LS_HELD = 100_000  # records `ls` reads before it prints (all or nothing up to there)


@click.command("log", cls=DataversionCommand)
@click.argument("ref", default="main")
@click.option("-n", "max_count", type=int, default=None, help="Show at most N commits.")
@json_option
@repo_options
def log_command(ref, max_count, as_json, repo):
    """Commits reachable from REF (first parents), newest first."""
    if max_count is not None and max_count < 0:
        raise BadInputError(f"-n must be 0 or more, got {max_count}", hint="`dataversion log -n 10` shows the last 10 commits")
    r = repo.open()
    commits = r.log(resolve_ref(r, ref), max_count)
    pins = _pinned_commits(r)
    for c in commits:
        c["pinned"] = c["id"] in pins
    if as_json:
        return emit_json(commits)
    for c in commits:
        counts = c["records"]
        mods = ", ".join(f"{k} {v}" for k, v in counts["by_modality"].items())
        pin = "  [pinned]" if c["pinned"] else ""
        click.echo(f"{c['id'][:12]}  {c['time'][:19]}  {counts['count']:>9,} records ({mods})  {c['message']}{pin}")


def _pinned_commits(repo) -> set[str]:
    """Commits a pin (a recorded checkpoint) protects from gc.

    The pins are also read by `Repo.root_commits`, mixed with refs and reflog entries; this
    stays here until the repository offers the pins alone (`Repo.pinned_commits()`, issue 16).
    """
    pins: set[str] = set()
    for info in repo.store.list("pins/"):
        try:
            pins.update(json.loads(repo.store.get(info.key)).get("commits", []))
        except (DataversionError, ValueError):
            continue  # unpinned between list and get, or unreadable: not a pin for `log`
    return pins


@click.command("show", cls=DataversionCommand)
@click.argument("ref", default="main")
@json_option
@repo_options
def show_command(ref, as_json, repo):
    """One commit: its fields, record counts and shards."""
    r = repo.open()
    d = r.show(resolve_ref(r, ref))
    if as_json:
        return emit_json(d)
    click.echo(f"commit   {d['id']}")
    if d["refs"]:
        click.echo(f"refs     {', '.join(d['refs'])}")
    click.echo(f"parents  {' '.join(d['parents']) or '(root)'}")
    click.echo(f"author   {d['author']}")
    click.echo(f"time     {d['time']}")
    click.echo(f"records  {d['records']['count']:,} {json.dumps(d['records']['by_modality'])}")
    click.echo(f"counts   {json.dumps(d['counts'])}")
    click.echo(f"content  {d['root']}")
    click.echo(f"shards   {d['shards']} (packing {d['packing']})")
    if d["provenance"]:
        click.echo(f"provenance {json.dumps(d['provenance'])}")
    click.echo(f"\n    {d['message']}")


@click.command("ls", cls=DataversionCommand)
@click.argument("ref", default="main")
@click.option("--shards", is_flag=True, help="List shards instead of records.")
@json_option
@repo_options
def ls_command(ref, shards, as_json, repo):
    """Records (or shards) of a snapshot."""
    r = repo.open()
    commit_id = resolve_ref(r, ref)  # before anything is printed: an error leaves stdout empty
    if shards:
        rows = r.ls_shards(commit_id)
        if as_json:
            return emit_json(rows)
        for s in rows:
            click.echo(f"{s['id']}  {s['live_rows']:>8,}/{s['rows']:<8,} rows  {s['size']:>12,} bytes")
        return
    records = r.ls(commit_id, columns=("record_id", "modality", "source", "label", "size"))
    # The first LS_HELD records are read (every shard they come from checked) before anything
    # is printed: a listing that fits is all or nothing (a corrupt shard leaves stdout empty,
    # exit 5); a longer one streams on, without holding the snapshot in memory.
    head = list(itertools.islice(records, LS_HELD))
    rest = itertools.chain(head, records)
    if as_json:
        if not head:
            return click.echo("[]")
        click.echo("[\n  " + json.dumps(next(rest)), nl=False)
        for rec in rest:
            click.echo(",\n  " + json.dumps(rec), nl=False)
        click.echo("\n]")
        return
    for rec in rest:
        label = f"  [{rec['label']}]" if rec["label"] else ""
        click.echo(f"{rec['record_id']}  {rec['modality']:<6} {rec['size'] or 0:>10,}  {shown(rec['source'])}{label}")


@click.command("diff", cls=DataversionCommand)
@click.argument("a")
@click.argument("b", default="main")
@click.option("--records", is_flag=True, help="List the records added, removed and changed.")
@json_option
@repo_options
def diff_command(a, b, records, as_json, repo):
    """Records added and removed from A to B."""
    r = repo.open()
    d = r.diff(resolve_ref(r, a), resolve_ref(r, b), records=records)
    if as_json:
        return emit_json(d)
    changed = f" ~{d['changed']:,}" if d["changed"] else ""
    click.echo(f"{d['from'][:12]}..{d['to'][:12]}: +{d['added']:,} -{d['removed']:,}{changed} records")
    for mod, c in d["by_modality"].items():
        click.echo(f"  {mod:<7} +{c['added']:,} -{c['removed']:,}")
    if records:
        for sign, name in (("+", "added"), ("-", "removed"), ("~", "changed")):
            for r in d["records"][name]:
                click.echo(f"{sign} {r['record_id']}  {r['modality']:<6} {shown(r['source'])}")
