"""gc: every root, what it reaches, and deleting the rest. All of gc lives here.

Roots: refs, reflog entries, pins (lineage), and live in-flight markers (`inflight.py`).
gc refuses rather than guesses: an unreadable or corrupt object on the way from any root
stops it with CorruptObjectError (exit 5) naming the object, before anything is deleted.
Objects younger than the grace period, or than the oldest live in-flight marker, are kept;
writers refresh objects they reuse, so those count as young. Right before deleting, gc
re-reads the refs and markers; if a writer started or a ref moved, it marks again.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from ..errors import ConflictError, CorruptObjectError, DataversionError, NotFoundError
from ..history import history_key
from ..inflight import INFLIGHT, Marker, live_markers
from ..objectdb import blob_key, commit_key
from ..packing import packing_key, pointer_key, shard_infos
from ..shards import shard_key
from ..tree import ENTRY, INDEX, SHARDS, TreeReader
from .erase import erased_keys, settle

if TYPE_CHECKING:
    from ..repo import Repo

DEFAULT_GRACE_SECONDS = 14 * 86400.0  # git's gc.pruneExpire
# tmp/ holds the scratch results of pipeline workers; a killed run leaves it behind.
# features/<commit>.parquet are derived per-commit tables (written after the commit lands).
# Pointers first: a gc stopped midway never leaves a pointer naming a packing it deleted.
_COLLECTABLE = ("packing/", "commits/", "packings/", "tree/", "treepacks/", "shards/", "blobs/", "history/", "tmp/", "features/", INFLIGHT)
_CLOCK_SLACK = 120.0  # seconds: writers' and the store's clocks may disagree this much
_RECHECK_EVERY = 64  # deletions between two looks at the in-flight markers


def _refuse(what: str, err: Exception) -> CorruptObjectError:
    return CorruptObjectError(
        f"gc stopped, nothing deleted: {what} cannot be read ({err})",
        hint="run `dataversion verify --all`; restore or remove the object, then run gc again",
    )


def reachable_commits(repo: Repo, roots: list[str], *, strict: bool = False) -> set[str]:
    """Every commit reachable from `roots` through parents.

    `strict` (gc): a missing or corrupt commit raises CorruptObjectError naming it;
    otherwise (verify, which reports them itself) it is skipped.
    """
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        try:
            stack.extend(repo.read_commit(cid).parents)
        except (NotFoundError, CorruptObjectError) as e:
            if strict:
                raise _refuse(f"commit {cid}", e) from e
            continue
    return seen


def root_commits(repo: Repo, skip_reflog: set[str] = frozenset(), *, strict: bool = False) -> set[str]:
    """Commits named by a ref, a reflog entry or a pin (lineage): the gc roots.

    `strict` (gc): an unreadable reflog entry or pin raises instead of being skipped.
    """
    roots = set(repo.refs.list().values())
    for e in repo.refs.reflog(skip=skip_reflog, strict=strict):
        roots.update(x for x in (e.old, e.new) if x)
    for info in repo.store.list("pins/"):
        try:
            roots.update(json.loads(repo.store.get(info.key))["commits"])
        except NotFoundError:
            continue  # unpinned meanwhile
        except (ValueError, KeyError, TypeError) as e:
            if strict:
                raise _refuse(f"pin {info.key}", e) from e
            continue
    return roots


def reachable_keys(repo: Repo, skip_reflog: set[str] = frozenset()) -> set[str]:
    """Every object key a root reaches. Raises CorruptObjectError on anything unreadable."""
    keep: set[str] = set()
    nodes: set[str] = set()  # tree nodes already walked: shared subtrees are walked once
    roots: set[str] = set()
    for cid in reachable_commits(repo, sorted(root_commits(repo, skip_reflog=skip_reflog, strict=True)), strict=True):
        keep.add(commit_key(cid))
        keep.add(history_key(cid))
        keep.add(f"features/{cid}.parquet")
        try:
            commit = repo.read_commit(cid)
            keep.update(blob_key(b) for b in repo.attachment_ids(cid).values())
            if commit.root in roots:
                continue
            roots.add(commit.root)
            # nodes read from the store, not this process's cache: a corrupt one stops gc
            keep.update(TreeReader(repo.store, commit.root, ENTRY, cached=False).object_keys(nodes))
            keep.add(pointer_key(commit.root))
            packing = repo.read_packing(cid)
            keep.add(packing_key(packing.id))
            keep.update(TreeReader(repo.store, packing.index, INDEX, cached=False).object_keys(nodes))
            keep.update(TreeReader(repo.store, packing.shards, SHARDS, cached=False).object_keys(nodes))
            table = TreeReader(repo.store, packing.shards, SHARDS, cached=False).entries()
            keep.update(shard_key(s.id) for s in shard_infos(table))
        except (NotFoundError, CorruptObjectError) as e:
            raise _refuse(f"the content tree or packing of commit {cid}", e) from e
    return keep


def _protected(info, markers: list[Marker], cutoff: float) -> bool:
    if info.mtime > cutoff:
        return True
    if markers:
        oldest = min(m.started for m in markers)
        if info.mtime >= oldest - _CLOCK_SLACK:
            return True
        if any(m.scratch and info.key.startswith(m.scratch) for m in markers):
            return True
        if any(info.key == m.key for m in markers):
            return True
    return False


def _state(repo: Repo) -> tuple[dict[str, str], frozenset[str]]:
    return repo.refs.list(), frozenset(m.key for m in live_markers(repo.store))


def _plan(repo: Repo, skip_reflog: set[str], grace_seconds: float) -> tuple[list, int, list[Marker]]:
    markers = live_markers(repo.store)
    keep = reachable_keys(repo, skip_reflog=skip_reflog)
    cutoff = time.time() - grace_seconds
    # shards erasures replaced hold erased payloads: once no root reaches them they go,
    # whatever their age (in-flight writers still protect theirs)
    replaced = erased_keys(repo)
    doomed, young = [], 0
    for prefix in _COLLECTABLE:
        for info in repo.store.list(prefix):
            if info.key in keep:
                continue
            if _protected(info, markers, float("inf") if info.key in replaced else cutoff):
                young += 1
                continue
            doomed.append(info)
    return doomed, young, markers


def gc(
    repo: Repo, *, dry_run: bool = False, grace_seconds: float = DEFAULT_GRACE_SECONDS, expire_reflog_seconds: float | None = None
) -> dict[str, Any]:
    """Delete objects unreachable from every root and older than the grace period.

    With `expire_reflog_seconds`, reflog entries older than that are dropped first (git's
    reflog expiry), so commits only they kept become garbage unless a ref or pin needs them.
    Raises CorruptObjectError (nothing deleted) when any object on a root's path is
    unreadable, ConflictError when writers keep moving refs while gc marks.
    """
    if not dry_run:
        settle(repo)  # no commit keeps naming what an erasure replaced (a killed writer's)
    expired = []
    if expire_reflog_seconds is not None:
        reflog_cutoff = time.time() - expire_reflog_seconds
        expired = [i for i in repo.store.list("reflog/") if i.mtime <= reflog_cutoff]
    skip = {i.key for i in expired}
    for _attempt in range(3):
        before = _state(repo)
        doomed, young, markers = _plan(repo, skip, grace_seconds)
        if _state(repo) == before:
            break
    else:
        raise ConflictError("gc stopped, nothing deleted: refs kept moving while it marked", hint="run gc again when writers are quieter")
    temps = []
    if hasattr(repo.store, "list_temp"):
        cutoff = time.time() - grace_seconds
        temps = [t for t in repo.store.list_temp() if not _protected(t, markers, cutoff)]
    deleted = []
    if not dry_run:
        for info in expired:
            repo.store.delete(info.key)
        known = before[1]
        for i, info in enumerate(doomed + temps):
            if i % _RECHECK_EVERY == 0 and i:
                now_markers = live_markers(repo.store)
                if frozenset(m.key for m in now_markers) - known:
                    break  # a writer started: what it reuses may be among the rest
            try:
                repo.store.delete(info.key)
            except DataversionError:
                raise
            deleted.append(info)
    else:
        deleted = doomed + temps
    return {
        "dry_run": dry_run,
        "reflog_expired": len(expired),
        "deleted": len(deleted),
        "bytes": sum(i.size for i in deleted),
        "kept_young": young,
        "in_flight": len(markers),
        "objects": sorted(i.key for i in deleted),
    }
