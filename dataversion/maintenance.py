"""gc (delete what no ref, reflog entry or pin can reach) and verify (re-hash everything)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.compute as pc

from .errors import CorruptObjectError, DataversionError, NotFoundError
from .hashing import DIGEST_MOD, digest_hex, digest_int, object_id
from .history import history_key
from .objects import Manifest
from .records import binary_record_ids, ids_as_numpy, text_record_ids
from .shards import decode_shard, entries_digest_of, live_rows, modality_counts, shard_key

if TYPE_CHECKING:
    from .repo import Repo

# tmp/ holds the scratch results of pipeline workers; a killed run leaves it behind.
# features/<commit>.parquet are derived per-commit tables (written after the commit lands).
_COLLECTABLE = ("commits/", "manifests/", "shards/", "blobs/", "history/", "tmp/", "features/")


def reachable_keys(repo: Repo, skip_reflog: set[str] = frozenset()) -> set[str]:
    from .repo import blob_key, commit_key, manifest_key

    keep: set[str] = set()
    for cid in repo.reachable_commits(sorted(repo.root_commits(skip_reflog=skip_reflog))):
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


def collect_garbage(
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


def verify(repo: Repo, ref: str | None = None, *, progress: Any = None) -> dict[str, Any]:
    """Re-hash every object reachable from `ref` (or from every ref if None).

    Checks: each commit's bytes hash to its id; each manifest's bytes to its id and its
    record summary equals the commit's; each shard's bytes to its id; each payload to its
    record id; each shard's entry digest and counts to what the manifest says.
    """
    from .repo import commit_key, manifest_key

    bad: list[dict[str, str]] = []
    roots = [repo.resolve(ref)] if ref else sorted(repo.root_commits())
    commits = repo.reachable_commits(roots)
    seen_shards: set[str] = set()
    checked = {"commits": 0, "manifests": 0, "shards": 0, "records": 0}
    for cid in sorted(commits):
        checked["commits"] += 1
        try:
            data = repo.store.get(commit_key(cid))
            from .objects import Commit

            commit, manifest_id = Commit.from_stored_bytes(data, cid)
        except DataversionError as e:
            bad.append({"object": commit_key(cid), "problem": str(e)})
            continue
        for parent in commit.parents:
            if parent not in commits or not repo.store.exists(commit_key(parent)):
                bad.append({"object": commit_key(parent), "problem": f"parent of {cid} is missing"})
        checked["manifests"] += 1
        try:
            mdata = repo.store.get(manifest_key(manifest_id))
            if object_id(mdata) != manifest_id:
                raise CorruptObjectError(f"manifest {manifest_id} is corrupt: its bytes hash to {object_id(mdata)}")
            manifest = Manifest.from_bytes(mdata, manifest_id)
        except DataversionError as e:
            bad.append({"object": manifest_key(manifest_id), "problem": str(e)})
            continue
        total = sum(digest_int(s.digest) for s in manifest.shards) % DIGEST_MOD
        if digest_hex(total) != commit.records.digest or manifest.records != commit.records:
            bad.append({"object": manifest_key(manifest_id), "problem": f"record summary does not match commit {cid}"})
        for shard in manifest.shards:
            if shard.key in seen_shards:
                continue
            seen_shards.add(shard.key)
            problem = _verify_shard(repo, shard, checked)
            if problem:
                bad.append({"object": shard_key(shard.id), "problem": problem})
            if progress is not None:
                progress.update(1)
    return {"ok": not bad, "checked": checked, "bad": bad}


def _verify_shard(repo: Repo, shard, checked: dict[str, int]) -> str | None:
    try:
        data = repo.store.get(shard_key(shard.id))
    except NotFoundError:
        return f"shard {shard.id} is missing"
    checked["shards"] += 1
    actual = object_id(data)
    if actual != shard.id:
        return f"shard {shard.id} is corrupt: its bytes hash to {actual}"
    try:
        table = decode_shard(data, shard.id)
    except CorruptObjectError as e:
        return str(e)
    if table.num_rows != shard.rows:
        return f"shard {shard.id} has {table.num_rows} rows, manifest says {shard.rows}"
    bad_payloads = payload_mismatches(table)
    checked["records"] += table.num_rows
    if len(bad_payloads):
        return f"shard {shard.id}: {len(bad_payloads)} payload(s) do not hash to their record id, first at row {bad_payloads[0]}"
    live = live_rows(table, shard.deleted)
    if digest_hex(entries_digest_of(live)) != shard.digest or modality_counts(live) != shard.by_modality:
        return f"shard {shard.id}: record metadata does not match its manifest entry"
    return None


def payload_mismatches(table) -> np.ndarray:
    """Row indices whose payload does not hash to the record id (erased payloads excepted)."""
    ids = ids_as_numpy(table.column("record_id"))
    is_text = pc.is_valid(table.column("text")).to_numpy(zero_copy_only=False)
    is_data = pc.is_valid(table.column("data")).to_numpy(zero_copy_only=False)
    actual = np.empty(len(ids), dtype="S16")
    t_rows = np.flatnonzero(is_text)
    d_rows = np.flatnonzero(is_data & ~is_text)
    if len(t_rows):
        actual[t_rows] = np.frombuffer(b"".join(text_record_ids(table.column("text").take(t_rows))), dtype="S16")
    if len(d_rows):
        actual[d_rows] = np.frombuffer(b"".join(binary_record_ids(table.column("data").take(d_rows))), dtype="S16")
    check = is_text | is_data
    return np.flatnonzero(check & (actual != ids))
