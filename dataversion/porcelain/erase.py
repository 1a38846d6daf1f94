"""Porcelain: erase records from every version (a deletion request, a poisoned sample).

What an erasure does, in this order (each step idempotent, so a rerun after SIGKILL at any
point finishes the job):
1. writes its record `erasures/<id>.json` as an intent (the ids, the reason) and puts the
   ids in the denylist (`dataversion.denylist`): from then on `add`, `ingest` and
   `Repo.commit` reject the same content (reason `erased`);
2. for every stored commit holding an erased record (every branch, tag, reflog entry, pin,
   and commits no ref names yet), takes the packing of its content root and rewrites each
   shard holding the record once: the same rows in the same order, the record's payload set
   to null. The record maps each old shard to its replacement (and `erased-shards/<old>`)
   before any packing names the replacement;
3. re-points `packing/<root>` by compare-and-swap (`_rewrite_packing`): index and shard-table
   entries moved to the replacements, the ids added to the packing's `erased` set; rewrites
   the attachments naming the record (dedup index, rejects/duplicates entries) behind
   `attachment-overrides/<commit>.json` and the commit's features table;
4. repeats 2-3 until a pass finds nothing (a commit that landed meanwhile is caught), then
   lists which checkpoints had seen the records (lineage) and marks the record done.
A writer racing an erasure fixes its own commit after its ref update (`after_commit`).
`gc` afterwards deletes the old shards and blobs (whatever their age).

Readers skip erased records (`locate` leaves them out); the loader's order is over content
blocks, erased records included, so every other sample keeps its position and a batch
holding an erased sample comes out one shorter. Commit ids never change: the content tree
keeps the record's id and digest.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..denylist import ERASED, alias_ids, content_forms, denied_hex, deny
from ..errors import BadInputError, ConflictError, CorruptObjectError, NotFoundError
from ..hashing import canonical_json, object_id
from ..inflight import InFlight
from ..objectdb import blob_key
from ..objects import utc_now
from ..records import hex_to_id, ids_as_numpy, ids_to_hex
from ..shards import parquet_bytes, shard_key, without_payloads

if TYPE_CHECKING:
    from ..repo import Repo

ERASURES = "erasures/"
# one small object per replaced shard (`<old id>` -> its replacement and erasure): writers
# find out with one listing whether a commit of theirs names one, however many erasures
REPLACED = "erased-shards/"
INTENT, DONE = "intent", "done"
_CAS_TRIES = 16
# Attachments that can name a record: JSON lists of dicts, and the dedup index (its owner,
# `pipelines`, scrubs it: imported by name only when a commit carries one).
_JSON_TABLES = ("rejects", "duplicates")
_INDEX_SCRUBBERS = {"dedup_index": "pipelines.dedup.index:scrub_index_bytes"}
# the sharded dedup state (pipelines.dedup.state): parts `dedup_state/<blob>` (band rows,
# hashes by record id) are scrubbed like the index; the `dedup_state` manifest then names
# the rewritten parts
_STATE, _STATE_PART_PREFIX = "dedup_state", "dedup_state/"
_STATE_PART_SCRUBBER = "pipelines.dedup.state:scrub_part_bytes"
_STATE_RENAMER = "pipelines.dedup.state:rename_parts"
_ID_FIELDS = ("record_id", "duplicate_of")
_FREE_TEXT = ("message",)


def erasure_key(erasure_id: str) -> str:
    return f"{ERASURES}{erasure_id}.json"


def erasure_id_of(hex_ids: list[str]) -> str:
    """The id of an erasure of these records: the same set, the same erasure (a rerun resumes it)."""
    return object_id(canonical_json(sorted(hex_ids)))


# ---------------------------------------------------------------------------- the record
def _read_record(repo: Repo, erasure_id: str) -> tuple[dict[str, Any], str] | None:
    try:
        data, token = repo.store.get_versioned(erasure_key(erasure_id))
    except NotFoundError:
        return None
    try:
        return json.loads(data), token
    except ValueError as e:
        raise CorruptObjectError(f"erasure record {erasure_key(erasure_id)} cannot be parsed: {e}") from e


def _update_record(repo: Repo, erasure_id: str, change) -> dict[str, Any]:
    """Apply `change(record) -> None` by compare-and-swap (retried: writers may race)."""
    for _ in range(_CAS_TRIES):
        got = _read_record(repo, erasure_id)
        if got is None:
            raise NotFoundError(f"erasure {erasure_id} has no record")
        record, token = got
        before = canonical_json(record)
        change(record)
        after = canonical_json(record)
        if after == before:
            return record
        try:
            repo.store.put_if_match(erasure_key(erasure_id), after, token)
            return record
        except ConflictError:
            continue
    raise ConflictError(f"erasure record {erasure_id} kept changing", hint="run the erasure again")


_RECORDS_SEEN: dict[tuple, dict[str, Any]] = {}  # (url, key, size, mtime, etag) -> record


def erasures(repo: Repo) -> list[dict[str, Any]]:
    """Every erasure record, oldest first (what `dataversion erasures` prints). One listing;
    a record is read again only when its version in the listing changed."""
    out = []
    for info in repo.store.list(ERASURES):
        if not info.key.endswith(".json"):
            continue
        seen = (repo.url, info.key, info.size, info.mtime, info.etag)
        record = _RECORDS_SEEN.get(seen)
        if record is None:
            got = _read_record(repo, info.key[len(ERASURES):-len(".json")])
            if got is None:
                continue
            record = got[0]
            if len(_RECORDS_SEEN) > 4096:
                _RECORDS_SEEN.clear()
            _RECORDS_SEEN[seen] = record
        out.append(json.loads(json.dumps(record)))  # callers may change their copy
    return sorted(out, key=lambda r: (r.get("created", ""), r["id"]))


def erased_shards(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """old shard id -> replacement {id, size, erased} over every erasure record."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        out.update(r.get("shards", {}))
    return out


def erased_blobs(records: list[dict[str, Any]]) -> dict[str, str]:
    """old attachment blob id -> rewritten blob id over every erasure record."""
    out: dict[str, str] = {}
    for r in records:
        out.update(r.get("blobs", {}))
    return out


def erased_record_ids(records: list[dict[str, Any]]) -> set[str]:
    return {h for r in records for h in r.get("records", [])}


# ---------------------------------------------------------------------------- erase
def erase(
    repo: Repo,
    ids: list[str] | None = None,
    *,
    source_prefixes: list[str] | None = None,
    reason: str,
    progress: Any = None,
) -> dict[str, Any]:
    """Erase records (hex ids, and/or every record whose source starts with a prefix) from
    every version. Returns the report (also stored in the erasure record).

    Raises BadInputError (no reason, nothing named, bad id), NotFoundError (no record has
    that source prefix). Idempotent: erasing the same records again resumes or re-checks.
    """
    if not reason or not reason.strip():
        raise BadInputError("an erasure needs a --reason (it is kept in the erasure record)")
    if not ids and not source_prefixes:
        raise BadInputError("nothing to erase: give record ids or --source prefixes")
    targets = {hex_to_id(h).hex() for h in ids or []}
    prefixes = sorted(set(source_prefixes or ()))
    if prefixes:
        found = _ids_with_source(repo, tuple(prefixes))
        if not found and not targets:
            raise NotFoundError(f"no record of any version has a source starting with {', '.join(map(repr, prefixes))}")
        targets |= found
    hex_ids = sorted(targets)
    eid = erasure_id_of(hex_ids)
    if any(r.get("state") != DONE and r["id"] != eid for r in erasures(repo)):
        resume(repo, unfinished_only=True)  # an earlier erasure a killed run left: finish it first
    started = time.monotonic()
    with InFlight(repo.store, f"erase {eid[:12]}"):
        # the ids the erased texts get in their other stored forms (ingest's cleaning of what
        # add stored as it was): read before any shard is rewritten, kept in the intent
        aliases = [a.hex() for a in _alias_ids(repo, hex_ids) if a.hex() not in targets]
        intent = {"id": eid, "reason": reason.strip(), "records": hex_ids, "sources": prefixes, "state": INTENT,
                  "created": utc_now(), "shards": {}, "blobs": {}, "commits": [], "features": [], "aliases": aliases}
        repo.store.put_if_absent(erasure_key(eid), canonical_json(intent))
        deny(repo.store, hex_ids + aliases, eid)
        stats = _run(repo, eid, progress=progress)
    record = _finish(repo, eid)
    return _report(record, stats, time.monotonic() - started)


def resume(repo: Repo, *, progress: Any = None, unfinished_only: bool = False) -> list[dict[str, Any]]:
    """Run the erasures again: finish those a killed run left as an intent, and erase what a
    writer killed after its ref update left in its commit (each run is idempotent: a clean
    repository costs one search). Returns the reports."""
    out = []
    with InFlight(repo.store, "erase --resume"):
        for r in erasures(repo):
            if unfinished_only and r.get("state") == DONE:
                continue
            deny(repo.store, r["records"] + r.get("aliases", []), r["id"])
            started = time.monotonic()
            stats = _run(repo, r["id"], progress=progress)
            out.append(_report(_finish(repo, r["id"]), stats, time.monotonic() - started))
        settle(repo)
    return out


def _report(record: dict[str, Any], stats: dict[str, int], seconds: float) -> dict[str, Any]:
    return {
        "erasure": record["id"],
        "state": record["state"],
        "reason": record["reason"],
        "records": record["records"],
        "sources": record.get("sources", []),
        "commits": record.get("commits", []),
        "checkpoints": record.get("checkpoints", []),
        **stats,
        "seconds": round(seconds, 3),
    }


def _ids_with_source(repo: Repo, prefixes: tuple[str, ...]) -> set[str]:
    """Hex ids of the records of any stored commit whose source starts with a prefix."""
    out: set[str] = set()
    roots: set[str] = set()
    for cid in _stored_commits(repo):
        try:
            root = repo.root_of(cid)
            if root in roots:
                continue
            roots.add(root)
            tables = list(repo.read_rows(cid, ["source"], repo.locate(cid, with_erased=True)))
        except NotFoundError:
            continue
        for t in tables:
            src = t.column("source")
            hit = pc.fill_null(pc.starts_with(src, prefixes[0]), False)
            for p in prefixes[1:]:
                hit = pc.or_(hit, pc.fill_null(pc.starts_with(src, p), False))
            mask = hit.to_numpy(zero_copy_only=False)
            if mask.any():
                out.update(ids_to_hex(ids_as_numpy(t.column("record_id"))[mask]))
    return out


def _alias_ids(repo: Repo, hex_ids: list[str]) -> list[bytes]:
    """The ids the texts of the records `hex_ids` get in their other registered forms
    (`denylist.alias_ids`), their texts read from the first stored commits that hold them."""
    if not content_forms():
        return []
    wanted = np.array(sorted(bytes.fromhex(h) for h in hex_ids), dtype="S16")
    texts: list[str] = []
    for cid in _stored_commits(repo):
        if not len(wanted):
            break
        try:
            held = wanted[repo.contains(cid, wanted)]
            if not len(held):
                continue
            tables = list(repo.read_rows(cid, ["text"], repo.locate(cid, held)))  # an erased record: no row
        except NotFoundError:
            continue
        for t in tables:
            texts.extend(x for x in t.column("text").to_pylist() if x is not None)
            wanted = wanted[~np.isin(wanted, ids_as_numpy(t.column("record_id")))]
    return alias_ids(texts, repo.id_hash)


def _stored_commits(repo: Repo) -> list[str]:
    """Every commit in the store: those of every branch, tag, reflog entry and pin, and any
    a writer stored but has not named by a ref yet."""
    return sorted(i.key[len("commits/"):-len(".json")] for i in repo.store.list("commits/") if i.key.endswith(".json"))


class _Pass:
    """What one erasure knows while it runs: its ids, and the rows of each shard holding them."""

    def __init__(self, repo: Repo, record: dict[str, Any]):
        self.repo = repo
        self.eid = record["id"]
        self.hex_ids = set(record["records"])
        self.prefixes = tuple(record.get("sources", ()))
        self.doomed = np.array(sorted(bytes.fromhex(h) for h in self.hex_ids), dtype="S16")
        self.rows: dict[str, np.ndarray] = {}  # shard file id -> rows holding an erased record
        self.clean_blobs: set[str] = set()  # attachment blobs that name no erased record
        self.clean_features: set[str] = set()  # commits whose features table holds none
        self.stats = {"shards_rewritten": 0, "bytes_written": 0, "commits_repointed": 0,
                      "attachments_rewritten": 0, "features_rewritten": 0}


def _id_column(repo: Repo, shard_id: str) -> np.ndarray:
    """The record ids of every row of a shard, reading that column alone."""
    try:
        with repo.store.open_input(shard_key(shard_id)) as f:
            table = pq.ParquetFile(f).read(columns=["record_id"])
    except (pa.ArrowInvalid, OSError) as e:
        raise CorruptObjectError(f"shard {shard_id} is not a readable Parquet file: {e}") from e
    return ids_as_numpy(table.column("record_id"))


def _run(repo: Repo, eid: str, *, progress: Any = None) -> dict[str, int]:
    """Passes over every stored commit until one finds nothing left to erase."""
    got = _read_record(repo, eid)
    if got is None:
        raise NotFoundError(f"erasure {eid} has no record")
    p = _Pass(repo, got[0])
    while True:
        changed = False
        records = erasures(repo)
        _backfill_replaced(repo, [r for r in records if r["id"] == eid])
        known = erased_shards(records)
        held: list[str] = []
        for cid in _stored_commits(repo):
            try:
                changed |= _erase_in_commit(p, cid, known, held)
            except NotFoundError:
                continue  # collected by gc meanwhile (unreachable): nothing left to erase there
            if progress is not None:
                progress.update(1)
        _note_commits(repo, p.eid, held)
        if not changed:
            return p.stats


def _note_commits(repo: Repo, eid: str, held: list[str]) -> None:
    """Add commits to the record's list of those that held the records (one write)."""
    if held:
        _update_record(repo, eid, lambda r: r.__setitem__("commits", sorted(set(r["commits"]) | set(held))))


def _erase_in_commit(p: _Pass, cid: str, known: dict[str, dict[str, Any]], held_commits: list[str]) -> bool:
    """Erase what commit `cid` (its content root's packing) still holds of the erased records;
    True if anything changed. `known` (old shard -> replacement, every erasure's) grows with
    the shards rewritten; `cid` is appended to `held_commits` when it holds an erased record."""
    repo = p.repo
    held = repo.contains(cid, p.doomed)
    if not held.any():
        return False
    held_commits.append(cid)
    before = len(known)
    repointed = _rewrite_packing(repo, cid, p.doomed[held], known, p)
    if len(known) > before:  # published before the re-point names them (writers read these)
        new = dict(list(known.items())[before:])
        _update_record(repo, p.eid, lambda r: r["shards"].update(new))
        _mark_replaced(repo, p.eid, new)
    features_changed = _scrub_features(p, cid)
    blobs = _scrub_attachments(p, cid)
    if repointed:
        p.stats["commits_repointed"] += 1
    return bool(repointed or features_changed or blobs or len(known) > before)


def _mark_replaced(repo: Repo, eid: str, shards: dict[str, dict[str, Any]]) -> None:
    for old, replacement in shards.items():
        repo.store.put_if_absent(f"{REPLACED}{old}", canonical_json({"erasure": eid, **replacement}))


def _backfill_replaced(repo: Repo, records: list[dict[str, Any]]) -> None:
    """Write the replaced-shard objects a record names but the store lacks (a run killed
    between its record update and them). One listing."""
    have = {i.key[len(REPLACED):] for i in repo.store.list(REPLACED)}
    for r in records:
        missing = {k: v for k, v in r.get("shards", {}).items() if k not in have}
        if missing:
            _mark_replaced(repo, r["id"], missing)


def _rewrite_shard(p: _Pass, shard_id: str) -> dict[str, Any]:
    """Write the shard again with the payloads of the erased records removed (same rows,
    same order; rows erased before stay null)."""
    table = p.repo.read_shard(shard_id)  # verified against its name
    rows = np.flatnonzero(np.isin(ids_as_numpy(table.column("record_id")), p.doomed)).tolist()
    data = parquet_bytes(without_payloads(table, rows))
    new_id = object_id(data)
    if p.repo.store.put_if_absent(shard_key(new_id), bytes(data)):
        p.stats["bytes_written"] += len(data)
    else:
        p.repo.store.touch(shard_key(new_id))
    p.stats["shards_rewritten"] += 1
    return {"id": new_id, "size": len(data), "erased": rows}


def _rewrite_packing(repo: Repo, commit_id: str, ids: np.ndarray, known: dict[str, dict[str, Any]], p: _Pass) -> bool:
    """Re-point the packing of the commit's content root (compare-and-swap on
    `packing/<root>`): the shards holding `ids` replaced by their rewrites (index and shard
    table entries moved to the new shard, same rows) and `ids` added to its erased set.
    Returns whether it re-pointed. The one function that knows how packing is stored."""
    from ..packing import (
        Packing,
        repoint_packing,
        shard_prefix,
        shards_reader,
    )
    from ..tree import SHARDS, TreeWriter

    hex_ids = ids_to_hex(ids)
    for _ in range(_CAS_TRIES):
        packing = repo.read_packing(commit_id)
        groups = repo.locate(commit_id, ids, packing=packing, with_erased=True)
        if set(hex_ids) <= set(packing.erased) and not any(g.shard in known for g in groups):
            return False
        table_ups = []
        for g in groups:
            old = g.shard
            if old not in known:
                known[old] = _rewrite_shard(p, old)
            new = known[old]["id"]
            # the rewrite has the same rows in the same order: its shard table entry keeps
            # the key the index names the rows by (an alias), so no index entry moves and the
            # change is one shard-table leaf per packing
            key = (g.key if g.key is not None else shard_prefix(old)) + b"\x00" * (16 - len(shard_prefix(old)))
            hit, entry = shards_reader(repo.store, packing).lookup(np.array([key], dtype="S16"))
            if hit.all():
                e = entry.copy()
                e["shard"], e["size"] = bytes.fromhex(new), known[old]["size"]
                table_ups.append(e)
        shards_root = TreeWriter(repo.store, SHARDS).apply(
            packing.shards, np.concatenate(table_ups) if table_ups else None)
        new_packing = Packing(packing.root, packing.count, packing.index, shards_root,
                              tuple(sorted(set(packing.erased) | set(hex_ids))))
        repo.write_packing(new_packing)
        try:
            repoint_packing(repo.store, packing.root, packing.id, new_packing.id)
            return True
        except ConflictError:
            continue  # re-pointed by another process meanwhile: start from what it wrote
    raise ConflictError(f"the packing of commit {commit_id} kept moving", hint="run `dataversion erase --resume`")


def _scrub_attachments(p: _Pass, cid: str) -> dict[str, str]:
    """Rewrite the attachments of `cid` that name an erased record; old blob -> new blob.
    State parts go first, so that the state manifest can name their rewrites."""
    repo = p.repo
    out: dict[str, str] = {}
    names = sorted(repo.attachment_ids(cid).items(), key=lambda kv: (kv[0] == _STATE, kv[0]))
    for name, blob_id in names:
        part = name.startswith(_STATE_PART_PREFIX)
        if (name not in _JSON_TABLES and name not in _INDEX_SCRUBBERS and not part and name != _STATE) \
                or blob_id in p.clean_blobs:
            continue
        data = repo.read_blob(blob_id)
        if name in _JSON_TABLES:
            scrubbed = _scrub_json_table(data, p)
        elif part:
            scrubbed = _call(_STATE_PART_SCRUBBER, name, data, p.doomed)
        elif name == _STATE:
            scrubbed = _call(_STATE_RENAMER, name, data, out)
        else:
            scrubbed = _scrub_index(name, data, p)
        if scrubbed is None or scrubbed == data:
            if name != _STATE:  # a manifest is clean only relative to this pass's parts
                p.clean_blobs.add(blob_id)
            continue
        new_id = repo.put_blob(scrubbed)
        out[blob_id] = new_id
        p.stats["attachments_rewritten"] += 1
    if out:
        _update_record(repo, p.eid, lambda r: r["blobs"].update(out))
        current = repo.attachment_ids(cid)
        _write_overrides(repo, cid, {name: out[b] for name, b in current.items() if b in out})
    return out


def _call(target: str, name: str, *args):
    import importlib

    module, _, attr = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except ImportError:
        raise BadInputError(f"commit attachment {name!r} needs {module} to be erased from, which is not installed") from None
    return fn(*args)


def _write_overrides(repo: Repo, cid: str, changes: dict[str, str]) -> None:
    """Point attachments of `cid` at their rewrites (compare-and-swap on its overrides)."""
    from ..objectdb import attachment_overrides_key

    key = attachment_overrides_key(cid)
    for _ in range(_CAS_TRIES):
        try:
            data, token = repo.store.get_versioned(key)
            current = json.loads(data)
        except NotFoundError:
            if repo.store.put_if_absent(key, canonical_json(changes)):
                return
            continue
        merged = {**current, **changes}
        if merged == current:
            return
        try:
            repo.store.put_if_match(key, canonical_json(merged), token)
            return
        except ConflictError:
            continue
    raise ConflictError(f"the attachments of commit {cid} kept moving", hint="run `dataversion erase --resume`")


def _scrub_json_table(data: bytes, p: _Pass) -> bytes | None:
    """Rejects/duplicates: entries naming an erased record keep their place (the counts hold)
    with their free text replaced by the erasure's mark."""
    try:
        rows = json.loads(data)
    except ValueError:
        return None
    if not isinstance(rows, list):
        return None
    out, changed = [], False
    for row in rows:
        if isinstance(row, dict) and (any(row.get(f) in p.hex_ids for f in _ID_FIELDS) or (
                p.prefixes and isinstance(row.get("source"), str) and row["source"].startswith(p.prefixes))):
            row = {k: v for k, v in row.items() if k not in _FREE_TEXT}
            row["erased"] = p.eid
            changed = True
        out.append(row)
    return canonical_json(out) if changed else None


def _scrub_index(name: str, data: bytes, p: _Pass) -> bytes | None:
    import importlib

    module, _, attr = _INDEX_SCRUBBERS[name].partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except ImportError:
        raise BadInputError(f"commit attachment {name!r} needs {module} to be erased from, which is not installed") from None
    return fn(data, p.doomed)


def _scrub_features(p: _Pass, cid: str) -> bool:
    """The commit's features table without the erased records' rows (a derived object,
    rewritten in place)."""
    from ..features import features_key

    key = features_key(cid)
    if cid in p.clean_features:
        return False
    try:
        data = p.repo.store.get(key)
    except NotFoundError:
        p.clean_features.add(cid)
        return False
    table = pq.read_table(pa.BufferReader(data))
    hit = pc.is_in(table.column("record_id"), value_set=pa.array(sorted(p.hex_ids), pa.string()))
    if not pc.any(hit).as_py():
        p.clean_features.add(cid)
        return False
    kept = table.filter(pc.invert(hit))
    buf = pa.BufferOutputStream()
    pq.write_table(kept, buf, compression="zstd")
    p.repo.store.put(key, buf.getvalue().to_pybytes())
    p.stats["features_rewritten"] += 1
    _update_record(p.repo, p.eid, lambda r: r["features"].append(cid) if cid not in r["features"] else None)
    return True


# ---------------------------------------------------------------------------- the end
def _finish(repo: Repo, eid: str) -> dict[str, Any]:
    """List the checkpoints that had seen the records (lineage) and mark the record done."""
    record = _read_record(repo, eid)[0]
    checkpoints = _checkpoints_that_saw(repo, record["records"])

    def done(r: dict[str, Any]) -> None:
        r["commits"] = sorted(r["commits"])
        r["checkpoints"] = checkpoints
        if r["state"] != DONE:
            r["state"], r["finished"] = DONE, utc_now()

    return _update_record(repo, eid, done)


def _checkpoints_that_saw(repo: Repo, hex_ids: list[str]) -> list[dict[str, Any]]:
    from ..training.lineage import checkpoints_that_saw, entry_dicts

    by_key: dict[str, dict[str, Any]] = {}
    saw: dict[str, list[str]] = {}
    for h in hex_ids:
        found = checkpoints_that_saw(repo, h)
        for d in entry_dicts(repo, found):
            key = d.get("id") or d.get("key") or canonical_json(d).decode()
            by_key.setdefault(key, d)
            saw.setdefault(key, []).append(h)
    return [{**by_key[k], "saw": sorted(saw[k])} for k in sorted(by_key, key=lambda k: (by_key[k].get("run", ""), by_key[k].get("step", 0), k))]


def after_commit(repo: Repo, commit_id: str, new_shards: list | None = None) -> None:
    """A writer's last step, after its ref update: if an erasure ran meanwhile, the commit's
    packing may name a shard it replaced (built from the parent's before the re-point) or
    hold denied content: erase it from this commit too. One listing when nothing is denied."""
    denied = denied_hex(repo.store)
    if not denied:
        return
    doomed = np.array(sorted(bytes.fromhex(h) for h in denied if len(h) == 32), dtype="S16")
    if not repo.contains(commit_id, doomed).any():
        return
    records = erasures(repo)
    known = erased_shards(records)
    for r in records:
        p = _Pass(repo, r)
        held: list[str] = []
        _erase_in_commit(p, commit_id, known, held)
        _note_commits(repo, p.eid, held)


def settle(repo: Repo) -> int:
    """Erase again from every stored commit what a writer killed between its ref update and
    `after_commit` left. gc runs this before marking. Returns how many commits changed."""
    records = erasures(repo)
    if not records:
        return 0
    _backfill_replaced(repo, records)
    known = erased_shards(records)
    n = 0
    for r in records:
        p = _Pass(repo, r)
        held: list[str] = []
        for cid in _stored_commits(repo):
            try:
                n += _erase_in_commit(p, cid, known, held)
            except NotFoundError:
                continue
        _note_commits(repo, p.eid, held)
    return n


def erased_keys(repo: Repo) -> set[str]:
    """Store keys of the objects erasures replaced (old shards and attachment blobs): gc
    deletes them once unreachable, whatever their age."""
    records = erasures(repo)
    return {shard_key(s) for s in erased_shards(records)} | {blob_key(b) for b in erased_blobs(records)}


__all__ = ["ERASED", "erase", "erasures", "resume", "after_commit", "settle", "erased_keys", "erasure_key"]
