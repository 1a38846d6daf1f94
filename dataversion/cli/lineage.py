"""`dataversion inspect | lineage | unpin`: training lineage from the command line.

Core commands of `dataversion.cli` (CORE_COMMANDS). Imports only click and the core at the
top (torch only inside `inspect`, which must read a torch checkpoint).

JSON shapes: `lineage --json` always prints a list of entries (empty when none), each with
id, run, step, commit, seed, epoch, position, world_size, batch_size, remainder, shuffle,
window, num_records, checkpoint, sha256, saved_at, repo, pinned, commit_exists (False once gc
collected the commit of an unpinned entry: the entry stays history). `inspect --json` prints one
object: commit, seed, epoch, position, world_size, batch_size, remainder, num_records, run,
step, saved_at, sha256, checkpoint, repo, lineage_id, commit_exists, recorded (entries with this
file's sha256), pinned (a pin of its entries, or of its own lineage id when the entry was never
written, holds its commit). A damaged checkpoint, or one whose sha256 is not its entry's, is
refused. `unpin --json` prints unpinned (ids of the pins removed), commits (their commits) and
recorded (ids of entries whose pin was already gone: their release is now recorded).
"""

from __future__ import annotations

import hashlib
from typing import Any

import click

from ..errors import BadInputError, NotFoundError
from .support import DataversionCommand, RepoLocation, emit_json, json_option, repo_options


# --------------------------------------------------------------------------- inspect
def inspect_checkpoint(path: str, repo_url: str | None = None, *, endpoint_url: str | None = None,
                       access_key: str | None = None, secret_key: str | None = None) -> dict[str, Any]:
    """What a checkpoint says about its data, checked against the repository.

    Errors: NotFoundError (no such file; its commit is gone from the repository), BadInputError
    (not a dataversion checkpoint, damaged, or not the file its lineage entry recorded). The
    repository is `repo_url` (S3: with the endpoint and keys given, else from the environment),
    else the one the checkpoint names; if none can be opened, `commit_exists` is None.
    """
    from ..repo import commit_key
    from ..training import lineage
    from ..training.checkpoint import check_lineage_sha256, parse_checkpoint, read_checkpoint_bytes

    data = read_checkpoint_bytes(path)
    ckpt = parse_checkpoint(data, path)  # verified: CRCs, metadata checksum, state schema
    meta = ckpt["dataversion"]
    state = meta.get("loader") or {}
    sha = hashlib.sha256(data).hexdigest()
    out: dict[str, Any] = {
        "checkpoint": lineage.checkpoint_location(path),
        "commit": state.get("commit"),
        "seed": state.get("seed"),
        "epoch": state.get("epoch"),
        "position": state.get("position"),
        "world_size": state.get("world_size"),
        "batch_size": state.get("batch_size"),
        "remainder": state.get("remainder"),
        "num_records": state.get("num_records"),
        "run": meta.get("run"),
        "step": meta.get("step"),
        "saved_at": meta.get("saved_at"),
        "sha256": sha,
        "size": len(data),
        "repo": repo_url or state.get("repo"),
        "states": sorted(k for k in ckpt if k != "dataversion"),
        "lineage_id": meta.get("lineage_id"),
        "commit_exists": None,
        "recorded": [],
        "pinned": False,
    }
    if out["commit"] is None or out["repo"] is None:
        return out
    repo = RepoLocation(out["repo"], endpoint_url, access_key, secret_key).open()
    out["commit_exists"] = repo.store.exists(commit_key(out["commit"]))
    if not out["commit_exists"]:
        raise NotFoundError(
            f"checkpoint {path} was trained on commit {out['commit']}, which no longer exists in {repo.url}",
            hint="it was garbage-collected after being unpinned, or --repo names another repository",
        )
    check_lineage_sha256(repo, meta, data, path)  # BadInputError if the file changed after its save
    run = out["run"] or lineage.DEFAULT_RUN
    found = [e for e in lineage.entries(repo, run=run) if e.sha256 == sha]
    dicts = lineage.entry_dicts(repo, found)
    out["recorded"] = [d["id"] for d in dicts]
    out["pinned"] = any(d["pinned"] for d in dicts)
    if not out["pinned"] and out["lineage_id"] is not None:  # its entry may never have been written
        out["pinned"] = repo.store.exists(lineage.pin_key(run, out["lineage_id"]))
    return out


@click.command("inspect", cls=DataversionCommand)
@click.argument("checkpoint")
@repo_options
@json_option
def inspect_command(checkpoint, repo, as_json):
    """What a checkpoint trained on: commit, seed, epoch, position, run, step, sha256.

    CHECKPOINT is a local path or s3://BUCKET/KEY. The repository is --repo, else the one
    the checkpoint names; the command fails if the commit no longer exists there.
    """

    d = inspect_checkpoint(checkpoint, repo.url, endpoint_url=repo.endpoint_url, access_key=repo.access_key,
                           secret_key=repo.secret_key)
    if as_json:
        return emit_json(d)
    for k in ("checkpoint", "commit", "run", "step", "seed", "epoch", "position", "world_size", "saved_at", "sha256", "repo"):
        click.echo(f"{k:<11}{d[k]}")
    click.echo(f"{'recorded':<11}{len(d['recorded'])} lineage entr{'y' if len(d['recorded']) == 1 else 'ies'}{' (pinned)' if d['pinned'] else ''}")


# --------------------------------------------------------------------------- lineage
@click.command("lineage", cls=DataversionCommand)
@click.argument("ref", required=False)
@click.option("--run", "run", default=None, help="Only the checkpoints of this run (its commits, in order, with steps).")
@click.option("--record", "record_id", default=None, metavar="RID", help="Only the checkpoints whose run had consumed this record.")
@repo_options
@json_option
def lineage_command(ref, run, record_id, repo, as_json):
    """Recorded checkpoints: on a commit (REF), of a run, or that saw a record.

    \b
      dataversion lineage main~3 --json          checkpoints that trained on that commit
      dataversion lineage --run exp-42 --json    one run's checkpoints, oldest first
      dataversion lineage --record 9f3c... --json  checkpoints that had seen the record
    Filters combine. Every form prints a list (empty when nothing matches).
    """

    from ..repo import commit_key
    from ..training import lineage

    r = repo.open()
    commit = r.resolve(ref) if ref else None
    if record_id is not None:
        found = lineage.checkpoints_that_saw(r, record_id, commit=commit)
        if run is not None:
            lineage.entries_of_run(r, run)  # unknown run: a clear error
            found = [e for e in found if e.run == run]
    elif run is not None:
        found = [e for e in lineage.entries_of_run(r, run) if commit is None or e.commit == commit]
    else:
        found = lineage.entries(r, commit=commit)
    rows = lineage.entry_dicts(r, found)
    present = {c: r.store.exists(commit_key(c)) for c in dict.fromkeys(row["commit"] for row in rows)}
    for row in rows:
        row["commit_exists"] = present[row["commit"]]
    if as_json:
        return emit_json(rows)
    if not rows:
        click.echo("no recorded checkpoints")
    for row in rows:
        pin = "  [pinned]" if row["pinned"] else ("" if row["commit_exists"] else "  [unpinned, commit gone]")
        click.echo(f"{row['saved_at']}  {row['run']}  step {row['step']}  commit {row['commit'][:12]}  "
                   f"epoch {row['epoch']} position {row['position']}  {row['checkpoint']}{pin}")


# --------------------------------------------------------------------------- unpin
@click.command("unpin", cls=DataversionCommand)
@click.option("--run", "run", default=None, help="Release the pins of every checkpoint of this run.")
@click.option("--checkpoint", "checkpoint", default=None, metavar="PATH", help="Release the pins of the entries naming this checkpoint.")
@repo_options
@json_option
def unpin_command(run, checkpoint, repo, as_json):
    """Release commits pinned by recorded checkpoints (gc may then collect them).

    Lineage entries stay (they show "pinned": false); only the pins go, each release
    recorded (so `verify` knows a commit gc then collects was released, not lost). Pins are
    found from the pins themselves: also a pin whose entry a stalled save never wrote. A
    commit still named by a branch, a tag, the reflog or another pin is kept by gc anyway.
    """

    from ..training import lineage

    if not run and not checkpoint:
        raise BadInputError("say what to unpin", hint="pass --run NAME or --checkpoint PATH")
    done = lineage.unpin(repo.open(), run=run, checkpoint=checkpoint)
    removed = [x for x in done if x.had_pin]
    recorded = [x.id for x in done if not x.had_pin]
    commits = sorted({c for x in removed for c in x.commits})
    if as_json:
        return emit_json({"unpinned": [x.id for x in removed], "commits": commits, "recorded": recorded})
    click.echo(f"unpinned {len(removed)} checkpoint{'' if len(removed) == 1 else 's'} ({len(commits)} commit{'s' if len(commits) != 1 else ''})"
               + (f"; recorded the release of {len(recorded)} entr{'y' if len(recorded) == 1 else 'ies'} unpinned earlier" if recorded else ""))
