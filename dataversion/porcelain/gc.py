"""gc: every root (refs, reflog, pins), what they reach, and deleting the rest. All of gc lives here."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from ..errors import CorruptObjectError, NotFoundError
from ..history import history_key
from ..objectdb import blob_key, commit_key, manifest_key
from ..shards import shard_key

if TYPE_CHECKING:
    from ..repo import Repo

# tmp/ holds the scratch results of pipeline workers; a killed run leaves it behind.
# features/<commit>.parquet are derived per-commit tables (written after the commit lands).
_COLLECTABLE = ("commits/", "manifests/", "shards/", "blobs/", "history/", "tmp/", "features/")


def reachable_keys(repo: Repo, skip_reflog: set[str] = frozenset()) -> set[str]:
    keep: set[str] = set()
    for cid in reachable_commits(repo, sorted(root_commits(repo, skip_reflog=skip_reflog))):
        keep.add(commit_key(cid))
        keep.add(history_key(cid))
        keep.add(f"features/{cid}.parquet")
        try:
            commit = repo.read_commit(cid)
            keep.update(blob_key(b) for b in commit.attachments.values())
            manifest_id = repo.manifest_id_of(cid)
            keep.add(manifest_key(manifest_id))
            keep.update(shard_key(s.id) for s in repo.read_manifest(cid).shards)
        except (NotFoundError, CorruptObjectError):
            continue
    return keep


def gc(
    repo: Repo, *, dry_run: bool = False, grace_seconds: float = 3600.0, expire_reflog_seconds: float | None = None
) -> dict[str, Any]:
    """Delete objects unreachable from every ref, reflog entry and pin, older than the grace period.

    The grace period protects a commit being written right now: its shards and manifest
    exist before its ref does. With `expire_reflog_seconds`, reflog entries older than that
    are deleted first (like git's reflog expiry), so commits only they kept become garbage,
    unless a ref or a pinned checkpoint still needs them.
    """
    expired = []
    if expire_reflog_seconds is not None:
        reflog_cutoff = time.time() - expire_reflog_seconds
        expired = [i for i in repo.store.list("reflog/") if i.mtime <= reflog_cutoff]
        if not dry_run:
            for info in expired:
                repo.store.delete(info.key)
    keep = reachable_keys(repo, skip_reflog=set(i.key for i in expired) if dry_run else set())
    cutoff = time.time() - grace_seconds
    doomed, young, freed = [], 0, 0
    for prefix in _COLLECTABLE:
        for info in repo.store.list(prefix):
            if info.key in keep:
                continue
            if info.mtime > cutoff:
                young += 1
                continue
            doomed.append(info)
            freed += info.size
    temps = []
    if hasattr(repo.store, "list_temp"):
        temps = [t for t in repo.store.list_temp() if t.mtime <= cutoff]
    if not dry_run:
        for info in doomed + temps:
            repo.store.delete(info.key)
    return {
        "dry_run": dry_run,
        "reflog_expired": len(expired),
        "deleted": len(doomed) + len(temps),
        "bytes": freed + sum(t.size for t in temps),
        "kept_young": young,
        "objects": sorted(i.key for i in doomed + temps),
    }


def reachable_commits(repo: Repo, roots: list[str]) -> set[str]:
    """Every commit reachable from `roots` through parents (missing ones are skipped)."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        try:
            stack.extend(repo.read_commit(cid).parents)
        except (NotFoundError, CorruptObjectError):
            continue
    return seen


def root_commits(repo: Repo, skip_reflog: set[str] = frozenset()) -> set[str]:
    """Commits named by a ref, a reflog entry or a pin (lineage): the gc roots."""
    roots = set(repo.refs.list().values())
    for e in repo.refs.reflog(skip=skip_reflog):
        roots.update(x for x in (e.old, e.new) if x)
    for info in repo.store.list("pins/"):
        try:
            roots.update(json.loads(repo.store.get(info.key)).get("commits", []))
        except (NotFoundError, ValueError):
            continue
    return roots
