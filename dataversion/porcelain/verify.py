"""verify: re-hash every object a root reaches and say which are corrupt or missing."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import history
from ..errors import CorruptObjectError, DataversionError, NotFoundError
from ..hashing import DIGEST_MOD, digest_hex, digest_int, object_id
from ..history import history_key
from ..objectdb import blob_key, commit_key, manifest_key
from ..objects import Commit, Manifest
from ..records import id_bytes, ids_as_numpy
from ..shards import (
    decode_shard,
    entries_digest_of,
    live_rows,
    modality_counts,
    null_payload_rows,
    payload_mismatches,
    shard_key,
)
from .erase import erased_blobs, erased_record_ids, erased_shards, erasures
from .gc import reachable_commits, root_commits

if TYPE_CHECKING:
    from ..repo import Repo


def verify(repo: Repo, ref: str | None = None, *, progress: Any = None) -> dict[str, Any]:
    """Re-hash every object reachable from `ref` (or from every ref if None).

    Checks every object kind: each ref names a stored commit; each commit's bytes hash to
    its id; each history chunk's entries hash to their commits and chain along first
    parents; each attachment blob hashes to its id; each manifest's bytes hash to its id
    and its record summary equals the commit's; each shard's bytes hash to its id, each
    payload to its record id, each shard's entry digest and counts to what the manifest
    says; each lineage entry and pin parses and names stored commits.
    """
    bad: list[dict[str, str]] = []
    erasure_records = erasures(repo)
    proof = _ErasureProof(erasure_records)
    roots = [repo.resolve(ref)] if ref else sorted(root_commits(repo))
    commits = reachable_commits(repo, roots)
    seen_shards: set[str] = set()
    checked = {"refs": 0, "commits": 0, "history": 0, "blobs": 0, "manifests": 0, "shards": 0, "records": 0,
               "lineage": 0, "pins": 0}
    if not ref:
        for name, target in sorted(repo.refs.list().items()):
            checked["refs"] += 1
            if not repo.store.exists(commit_key(target)):
                bad.append({"object": name, "problem": f"{name} names commit {target}, which is missing"})
        _verify_side_objects(repo, commits, checked, bad)
    for cid in sorted(commits):
        checked["commits"] += 1
        try:
            data = repo.store.get(commit_key(cid))
            commit, manifest_id, overrides = Commit.read_stored(data, cid)
        except DataversionError as e:
            bad.append({"object": commit_key(cid), "problem": str(e)})
            continue
        for parent in commit.parents:
            if parent not in commits or not repo.store.exists(commit_key(parent)):
                bad.append({"object": commit_key(parent), "problem": f"parent of {cid} is missing"})
        chunk_problem = _verify_history(repo, cid)
        if chunk_problem is not None:
            bad.append({"object": history_key(cid), "problem": chunk_problem})
        checked["history"] += 1
        for name, blob_id in sorted({**commit.attachments, **overrides}.items()):
            checked["blobs"] += 1
            if name in overrides and overrides[name] not in proof.new_blobs:
                bad.append({"object": commit_key(cid), "problem": f"attachment {name!r} of commit {cid} is replaced by blob {overrides[name]}, which no erasure record names"})
            if blob_id in proof.blobs:
                bad.append({"object": blob_key(blob_id), "problem": f"commit {cid} still reads attachment {name!r} from blob {blob_id}, which an erasure replaced (run `dataversion erase --resume`)"})
            try:
                repo.read_blob(blob_id)
            except DataversionError as e:
                bad.append({"object": blob_key(blob_id), "problem": f"attachment {name!r} of commit {cid}: {e}"})
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
            if shard.id in proof.shards:
                bad.append({"object": shard_key(shard.id), "problem": f"commit {cid} still names shard {shard.id}, which an erasure replaced (run `dataversion erase --resume`)"})
            if shard.key in seen_shards:
                continue
            seen_shards.add(shard.key)
            problem = _verify_shard(repo, shard, checked, proof)
            if problem:
                bad.append({"object": shard_key(shard.id), "problem": problem})
            if progress is not None:
                progress.update(1)
    return {"ok": not bad, "checked": checked, "bad": bad}


def _verify_history(repo: Repo, cid: str) -> str | None:
    try:
        data = repo.store.get(history_key(cid))
    except NotFoundError:
        return None  # derived data: `log` falls back to reading commits
    try:
        chunk = history.parse_chunk(data)
    except (ValueError, KeyError, TypeError) as e:
        return f"history chunk of {cid} cannot be parsed: {e}"
    if history.checked_entries(chunk, cid) is None:
        return f"history chunk of {cid} does not match the commits it summarizes"
    return None


def _verify_side_objects(repo: Repo, commits: set[str], checked: dict[str, int], bad: list[dict[str, str]]) -> None:
    """Lineage entries and pins: each parses, and each commit it names is stored."""
    for prefix, kind, field in (("lineage/", "lineage", "commit"), ("pins/", "pins", "commits")):
        for info in repo.store.list(prefix):
            if not info.key.endswith(".json"):
                continue
            checked[kind] += 1
            try:
                d = json.loads(repo.store.get(info.key))
                named = d[field] if isinstance(d[field], list) else [d[field]]
                if not all(isinstance(c, str) for c in named):
                    raise TypeError(f"{field} must name commit ids")
            except (ValueError, KeyError, TypeError) as e:
                bad.append({"object": info.key, "problem": f"cannot be parsed: {e}"})
                continue
            except NotFoundError:
                continue
            for c in named:
                if c not in commits and not repo.store.exists(commit_key(c)):
                    bad.append({"object": info.key, "problem": f"names commit {c}, which is missing"})


class _ErasureProof:
    """What the erasure records prove: which record ids were erased, which objects replaced."""

    def __init__(self, records: list[dict[str, Any]]):
        self.ids = {bytes.fromhex(h) for h in erased_record_ids(records)}
        # what finished erasures replaced: no commit may name it any more (while one runs,
        # commits it has not re-pointed yet are valid: they name what they always did)
        done = [r for r in records if r.get("state") == "done"]
        self.shards = erased_shards(done)
        self.blobs = erased_blobs(done)
        self.new_blobs = set(erased_blobs(records).values())
        # ids finished erasures removed: a row still holding one's payload is a leak
        done_ids = sorted(bytes.fromhex(h) for h in erased_record_ids(done))
        self.denied = np.array(done_ids, dtype="S16") if done_ids else np.empty(0, dtype="S16")


def _verify_shard(repo: Repo, shard, checked: dict[str, int], proof: _ErasureProof) -> str | None:
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
    # a row without payload is legitimate only as an erasure left it: marked erased in the
    # manifest, and its record id named by an erasure record
    empty = null_payload_rows(table).tolist()
    if empty != list(shard.erased):
        return (f"shard {shard.id}: rows {empty[:5]} have no payload but the manifest marks {list(shard.erased)[:5]} erased"
                if empty else f"shard {shard.id}: the manifest marks rows {list(shard.erased)[:5]} erased but they hold a payload")
    ids = ids_as_numpy(table.column("record_id"))
    if empty:
        unproven = [r for r in empty if id_bytes(ids, r) not in proof.ids]
        if unproven:
            return f"shard {shard.id}: row {unproven[0]} has no payload and no erasure record names its record"
    if len(proof.denied):
        held = np.flatnonzero(np.isin(ids, proof.denied))
        leaked = sorted(set(held.tolist()) - set(empty))
        if leaked:
            return (f"shard {shard.id}: row {leaked[0]} holds the payload of an erased record "
                    "(a writer stopped before erasing from its commit; run `dataversion erase --resume`)")
    live = live_rows(table, shard.deleted)
    if digest_hex(entries_digest_of(live)) != shard.digest or modality_counts(live) != shard.by_modality:
        return f"shard {shard.id}: record metadata does not match its manifest entry"
    return None
