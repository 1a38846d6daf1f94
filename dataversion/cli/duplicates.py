"""`dataversion duplicates REF`: the duplicates an ingest commit recorded, each pointing at
the record that was kept (its source beside it), grouped by cluster."""

from __future__ import annotations

import json
import re

import click

from ..errors import NotFoundError
from ..porcelain.branches import resolve_ref
from ..porcelain.history import inputs_commit
from ..porcelain.records import DUPLICATES
from .support import DataversionCommand, emit_json, json_option, repo_options


def commit_duplicates(repo, ref: str, cluster: str | None = None) -> list[dict]:
    """The duplicates of the commit REF names (past commits that read no inputs, `rm` and
    `revert`: of the newest one that did), each with `kept_source` (the source of the
    record it points at, None when that record is not in the commit), sorted by cluster
    then source; `cluster`: only the clusters whose id starts with it (NotFoundError naming
    it when none does, or when it is no hex id prefix)."""
    commit_id = inputs_commit(repo, resolve_ref(repo, ref))  # past rm/revert commits: the run's
    data = repo.read_attachment(commit_id, DUPLICATES)
    dups = json.loads(data) if data else []
    for d in dups:
        d.setdefault("cluster", d["duplicate_of"])
    if cluster is not None:
        dups = _of_cluster(dups, cluster, ref)
    targets = {d["duplicate_of"] for d in dups}
    sources = _sources_of(repo, commit_id, targets) if targets else {}
    for d in dups:
        d["kept_source"] = sources.get(d["duplicate_of"])
    return sorted(dups, key=lambda d: (d["cluster"], d["source"]))


def _of_cluster(dups: list[dict], cluster: str, ref: str) -> list[dict]:
    """The duplicates of the clusters whose id starts with `cluster`; NotFoundError if none."""
    prefix = cluster.strip().lower()
    if not re.fullmatch(r"[0-9a-f]+", prefix):
        raise NotFoundError(f"no cluster {cluster} in {ref}: a cluster id is hexadecimal (e.g. 5be0c1f0)",
                            hint=f"list the clusters with `dataversion duplicates {ref}`")
    hits = [d for d in dups if d["cluster"].startswith(prefix)]
    if not hits:
        held = f"{len({d['cluster'] for d in dups})} cluster(s)" if dups else "no duplicates"
        raise NotFoundError(f"no cluster {cluster} in {ref} (it recorded {held})",
                            hint=f"list the clusters with `dataversion duplicates {ref}`")
    return hits


def _sources_of(repo, commit_id: str, hex_ids: set[str]) -> dict[str, str]:
    """record id (hex) -> source, for the ids the commit holds: content-tree lookups, then
    only the shards holding them (rows checked against the tree)."""
    import numpy as np

    from ..records import ids_as_numpy, ids_to_hex

    ids = np.array([bytes.fromhex(h) for h in sorted(hex_ids) if len(h) == 32], dtype="S16")
    held = ids[repo.contains(commit_id, ids)] if len(ids) else ids
    out: dict[str, str] = {}
    if not len(held):
        return out
    for t in repo.read_rows(commit_id, ["source"], repo.locate(commit_id, held)):
        out.update(zip(ids_to_hex(ids_as_numpy(t.column("record_id"))), t.column("source").to_pylist()))
    return out


@click.command("duplicates", cls=DataversionCommand)
@click.argument("ref", default="main")
@click.option("--cluster", default=None, help="Only the cluster whose id starts with this.")
@json_option
@repo_options
def duplicates_command(ref, cluster, as_json, repo):
    """List the duplicates REF's ingest recorded, by cluster: what was kept and what not."""
    dups = commit_duplicates(repo.open(), ref, cluster)
    if as_json:
        return emit_json(dups)
    if not dups:
        click.echo("no duplicates recorded")
        return
    current = None
    for d in dups:
        if d["cluster"] != current:
            current = d["cluster"]
            kept = d["kept_source"] or "(not in this commit: held by an earlier one)"
            click.echo(f"cluster {current[:16]}  kept {d['duplicate_of'][:12]}  {kept}")
        via = f"  (same content as {d['via'][:12]})" if d.get("via") else ""
        sim = d.get("similarity")
        sim_s = f"{sim:.3f}" if isinstance(sim, (int, float)) else "  -  "
        click.echo(f"  {d['kind']:<5} {sim_s}  {d['source']}{via}")
