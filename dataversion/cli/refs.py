"""`dataversion branch | tag | reset | reflog | revert`: move and list refs, undo changes."""

from __future__ import annotations

import datetime as dt

import click

from ..errors import BadInputError
from .support import DataversionCommand, emit_json, json_option, repo_options


@click.command("branch", cls=DataversionCommand)
@click.argument("name", required=False)
@click.argument("start", required=False)
@click.option("-d", "--delete", is_flag=True, help="Delete branch NAME.")
@json_option
@repo_options
def branch_command(name, start, delete, as_json, repo):
    """List branches, create NAME at START (default main), or delete NAME with -d."""
    if delete and not name:
        raise BadInputError("branch -d needs a branch name",
                            hint="`dataversion branch -d NAME`; list branches with `dataversion branch`")
    if delete and start:
        raise BadInputError(f"branch -d takes one branch name, got {name} and {start}",
                            hint="delete them one at a time: `dataversion branch -d NAME`")
    r = repo.open()
    if name and delete:
        old = r.delete_branch(name)
        return click.echo(f"deleted branch {name} (was {old[:12]})")
    if name:
        cid = r.create_branch(name, start or "main")
        return click.echo(f"created branch {name} at {cid[:12]}")
    return _list_refs(r.branches(), as_json)


def _list_refs(refs: dict[str, str], as_json: bool) -> None:
    """Branches or tags by name: `--json` as [{name, commit}], else one line each."""
    if as_json:
        return emit_json([{"name": k, "commit": v} for k, v in sorted(refs.items())])
    for k, v in sorted(refs.items()):
        click.echo(f"{k:<24} {v[:12]}")
    return None


@click.command("tag", cls=DataversionCommand)
@click.argument("name", required=False)
@click.argument("ref", required=False, default="main")
@json_option
@repo_options
def tag_command(name, ref, as_json, repo):
    """List tags, or create tag NAME at REF (tags never move)."""
    r = repo.open()
    if name:
        cid = r.create_tag(name, ref)
        return click.echo(f"tagged {cid[:12]} as {name}")
    return _list_refs(r.tags(), as_json)


@click.command("reset", cls=DataversionCommand)
@click.argument("branch_name")
@click.argument("ref")
@json_option
@repo_options
def reset_command(branch_name, ref, as_json, repo):
    """Move BRANCH to REF (rollback). The old tip stays in the reflog."""
    old, new = repo.open().reset(branch_name, ref)
    if as_json:
        return emit_json({"branch": branch_name, "old": old, "new": new})
    undo = old[:12] if old else ""
    click.echo(f"{branch_name}: {old[:12] if old else '(none)'} -> {new[:12]} (undo with `dataversion reset {branch_name} {undo}`)")


@click.command("reflog", cls=DataversionCommand)
@click.argument("branch_name", required=False)
@json_option
@repo_options
def reflog_command(branch_name, as_json, repo):
    """Every ref update (of one branch, or all), oldest first."""
    entries = repo.open().reflog(branch_name)
    if as_json:
        return emit_json(entries)
    for e in entries:
        when = dt.datetime.fromtimestamp(e["time"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{when}  {e['ref']:<22} {(e['old'] or '-')[:12]:>12} -> {(e['new'] or '-')[:12]:<12} {e['reason']}")


@click.command("revert", cls=DataversionCommand)
@click.argument("ref")
@click.option("-b", "--branch", default="main", show_default=True)
@click.option("-m", "--message", default="")
@json_option
@repo_options
def revert_command(ref, branch, message, as_json, repo):
    """A new commit on BRANCH that undoes what REF changed."""
    result = repo.open().revert(ref, branch=branch, message=message)
    if as_json:
        return emit_json(result.to_dict())
    if result.commit_id is None:
        click.echo("nothing to revert: the branch already lacks those changes")
    else:
        click.echo(f"[{branch} {result.commit_id[:12]}] reverted {ref}: +{result.added} -{result.removed} records")
