"""verify: re-hash every object a root reaches and say which are corrupt or missing."""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import history
from ..errors import DataversionError, NotFoundError
from ..history import history_key
from ..objectdb import blob_key, commit_key
from ..objects import Commit
from ..packing import Packing, packing_key, pointer_key, read_pointer, shard_infos, shard_prefix
from ..records import ids_as_numpy
from ..shards import decode_shard, entry_digests, payload_mismatches, shard_key
from ..tree import (
    EMPTY_ROOT,
    ENTRY,
    INDEX,
    SHARDS,
    TreeReader,
    node_key,
)
from .gc import reachable_commits, root_commits

if TYPE_CHECKING:
    from ..repo import Repo


def verify(repo: Repo, ref: str | None = None, *, progress: Any = None) -> dict[str, Any]:
    """Re-hash every object reachable from `ref` (or from every ref if None).

    Checks every object kind: each ref names a stored commit; each commit's bytes hash to
    its id; each history chunk's entries hash to their commits and chain along first
    parents; each attachment blob hashes to its id; each tree node (content, index, shard
    table) hashes to its name and parses; each packing hashes to its name, names its
    commit's root and count, indexes exactly the content tree's ids, and its shard table's
    live counts match the index; each shard's bytes hash to its id, each payload to its
    record id, and the rows the index points to carry the ids and the digests (metadata and
    payload) the content tree holds; each lineage entry, pin and release (`unpin`) parses,
    and each commit a pin names is stored; so is each commit a lineage entry names, unless
    the entry's pin was released by `unpin` (its release recorded) and its pin is gone: gc
    may then have collected it, which is history, not a loss.

    Returns {"ok", "checked", "bad", "notes"}: `bad` the corrupt or missing objects (ok is
    False if any); `notes` what needs no repair, each {"object", "kind", "note"}: kind
    "released" (a lineage entry whose released commit was collected; with "commit") or
    "pin_without_entry" (a pin whose lineage entry was never written, e.g. a save whose
    repository stalled: `dataversion unpin --run RUN` removes it; with "run").
    """
    bad: list[dict[str, str]] = []
    notes: list[dict[str, str]] = []
    roots = [repo.resolve(ref)] if ref else sorted(root_commits(repo))
    commits = reachable_commits(repo, roots)
    checked = {"refs": 0, "commits": 0, "history": 0, "blobs": 0, "tree_nodes": 0, "packings": 0, "shards": 0,
               "records": 0, "lineage": 0, "pins": 0, "unpinned": 0}
    if not ref:
        for name, target in sorted(repo.refs.list().items()):
            checked["refs"] += 1
            if not repo.store.exists(commit_key(target)):
                bad.append({"object": name, "problem": f"{name} names commit {target}, which is missing"})
    side_at = len(bad)  # lineage entries and pins are reported after the refs
    nodes_seen: set[str] = set()
    roots_seen: dict[str, str] = {}
    shards_seen: set[str] = set()
    stored: set[str] = set()  # commits read and checked above: no second look for the side objects
    for cid in sorted(commits):
        checked["commits"] += 1
        try:
            data = repo.store.get(commit_key(cid))
            commit = Commit.from_stored_bytes(data, cid)
        except DataversionError as e:
            bad.append({"object": commit_key(cid), "problem": str(e)})
            continue
        stored.add(cid)
        for parent in commit.parents:
            if parent not in commits or not repo.store.exists(commit_key(parent)):
                bad.append({"object": commit_key(parent), "problem": f"parent of {cid} is missing"})
        chunk_problem = _verify_history(repo, cid)
        if chunk_problem is not None:
            bad.append({"object": history_key(cid), "problem": chunk_problem})
        checked["history"] += 1
        for name, blob_id in sorted(repo.attachment_ids(cid).items()):
            checked["blobs"] += 1
            try:
                repo.read_blob(blob_id)
            except DataversionError as e:
                bad.append({"object": blob_key(blob_id), "problem": f"attachment {name!r} of commit {cid}: {e}"})
        if commit.root in roots_seen:
            continue
        roots_seen[commit.root] = cid
        problems = _verify_content(repo, cid, commit, nodes_seen, shards_seen, checked, progress)
        bad.extend(problems)
    if not ref:
        side: list[dict[str, str]] = []
        _verify_side_objects(repo, stored, checked, side, notes)
        bad[side_at:side_at] = side
    # a shard (or node) several packings share is checked once per packing: named once
    bad = list({(b["object"], b["problem"]): b for b in bad}.values())
    return {"ok": not bad, "checked": checked, "bad": bad, "notes": notes}


def _walk(repo: Repo, root: str, dtype: np.dtype, nodes_seen: set[str], checked: dict[str, int]) -> np.ndarray:
    """Every entry of a tree, each node read from the store (not the cache) and re-hashed."""
    from ..errors import CorruptObjectError

    def visit(nid: str, node) -> None:
        if node.dtype != dtype:
            raise CorruptObjectError(f"tree node {nid} holds the wrong kind of entries")
        if nid not in nodes_seen:
            nodes_seen.add(nid)
            checked["tree_nodes"] += 1

    entries = TreeReader(repo.store, root, dtype, cached=False).entries(visit)
    if len(entries) > 1 and not (entries["id"][1:] > entries["id"][:-1]).all():
        raise CorruptObjectError(f"tree {root} is not sorted by id")
    return entries


def _verify_content(repo: Repo, cid: str, commit: Commit, nodes_seen: set[str], shards_seen: set[str],
                    checked: dict[str, int], progress: Any) -> list[dict[str, str]]:
    """The content tree of a commit and the packing its root points to, against each other."""
    root = commit.root
    try:
        content = _walk(repo, root, ENTRY, nodes_seen, checked)
    except DataversionError as e:
        return [{"object": node_key(root), "problem": f"content tree of commit {cid}: {e}"}]
    if len(content) != commit.records.count:
        return [{"object": commit_key(cid), "problem": f"commit {cid} says {commit.records.count} records, its content tree holds {len(content)}"}]
    if root == EMPTY_ROOT:
        return []
    found = read_pointer(repo.store, root)
    if found is None:
        return [{"object": pointer_key(root), "problem": f"the packing pointer of commit {cid} is missing"}]
    pid = found[0]
    checked["packings"] += 1
    try:
        packing = Packing.from_bytes(repo.store.get(packing_key(pid)), pid)
    except NotFoundError:
        return [{"object": packing_key(pid), "problem": f"packing {pid} of commit {cid} is missing"}]
    except DataversionError as e:
        return [{"object": packing_key(pid), "problem": str(e)}]
    if packing.root != root or packing.count != commit.records.count:
        return [{"object": packing_key(pid), "problem": f"packing {pid} packs root {packing.root}, not the root of commit {cid}"}]
    try:
        index = _walk(repo, packing.index, INDEX, nodes_seen, checked)
        table = _walk(repo, packing.shards, SHARDS, nodes_seen, checked)
    except DataversionError as e:
        return [{"object": packing_key(pid), "problem": f"packing {pid}: {e}"}]
    if len(index) != len(content) or (index["id"] != content["id"]).any():
        return [{"object": packing_key(pid), "problem": f"packing {pid} does not index exactly the records of commit {cid}"}]
    bad: list[dict[str, str]] = []
    infos = shard_infos(table)
    prefixes = np.ascontiguousarray(index["shard"]).view(np.dtype((np.void, 12)))
    uniq, inverse = np.unique(prefixes, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    rows_of = {uniq[k].tobytes(): order[bounds[k] : bounds[k + 1]] for k in range(len(uniq))}
    for info in infos:
        sel = rows_of.pop(info.key or shard_prefix(info.id), np.empty(0, np.int64))
        if len(sel) != info.live:
            bad.append({"object": packing_key(pid), "problem": f"packing {pid}: shard {info.id} has {len(sel)} indexed rows, its table says {info.live}"})
        key = (info.id, pid)
        if key in shards_seen:
            continue
        shards_seen.add(key)
        problem = _verify_shard(repo, info, index[sel], content[sel], checked, _erased_proven(repo, packing))
        if problem:
            bad.append({"object": shard_key(info.id), "problem": problem})
        if progress is not None:
            progress.update(1)
    if rows_of:
        bad.append({"object": packing_key(pid), "problem": f"packing {pid} indexes a shard its shard table lacks"})
    return bad


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


_LINEAGE, _PINS, _UNPINNED = "lineage/", "pins/", "unpinned/"  # training.lineage's layout


def _verify_side_objects(repo: Repo, stored: set[str], checked: dict[str, int], bad: list[dict[str, str]],
                         notes: list[dict[str, str]]) -> None:
    """Lineage entries, pins and releases: each parses; each commit a pin names is stored, and
    each commit an entry names unless its release is recorded and its pin gone (a note)."""
    present: dict[str, bool] = {c: True for c in stored}

    def exists(c: str) -> bool:
        if c not in present:
            present[c] = repo.store.exists(commit_key(c))
        return present[c]

    def read(key: str) -> dict[str, Any] | None:
        """The object as a dict; None if it went between list and get."""
        try:
            d = json.loads(repo.store.get(key))
        except NotFoundError:
            return None
        if not isinstance(d, dict):
            raise TypeError("not a JSON object")
        return d

    released: set[str] = set()  # "<run>/<id>.json" of every entry whose pin `unpin` released
    for info in repo.store.list(_UNPINNED):
        checked["unpinned"] += 1
        try:
            d = read(info.key)
            if d is None:
                continue
            if not isinstance(d["entry"], str) or d["entry"] != _LINEAGE + info.key[len(_UNPINNED):]:
                raise ValueError("it does not name the lineage entry it releases")
        except (ValueError, KeyError, TypeError) as e:
            bad.append({"object": info.key, "problem": f"cannot be parsed: {e}"})
            continue
        released.add(info.key[len(_UNPINNED):])
    pin_infos = list(repo.store.list(_PINS))
    pinned = {info.key[len(_PINS):] for info in pin_infos}
    entries: set[str] = set()
    for prefix, kind, field, infos in ((_LINEAGE, "lineage", "commit", repo.store.list(_LINEAGE)),
                                       (_PINS, "pins", "commits", pin_infos)):
        for info in infos:
            if not info.key.endswith(".json"):
                continue
            checked[kind] += 1
            rest = info.key[len(prefix):]
            if kind == "lineage":
                entries.add(rest)  # an entry that does not parse is still not a missing one
            try:
                d = read(info.key)
                if d is None:
                    continue
                named = d[field] if isinstance(d[field], list) else [d[field]]
                if not all(isinstance(c, str) for c in named):
                    raise TypeError(f"{field} must name commit ids")
            except (ValueError, KeyError, TypeError) as e:
                bad.append({"object": info.key, "problem": f"cannot be parsed: {e}"})
                continue
            if kind == "pins" and rest not in entries and "/" in rest:
                run = unquote(rest.rsplit("/", 1)[0])
                notes.append({"object": info.key, "kind": "pin_without_entry", "run": run,
                              "note": f"a pin whose lineage entry was never written (a save that stalled or failed); "
                                      f"`dataversion unpin --run {shlex.quote(run)}` removes it"})
            for c in named:
                if exists(c):
                    continue
                if kind == "pins":
                    bad.append({"object": info.key, "problem": f"names commit {c}, which is missing"})
                elif rest in pinned:
                    bad.append({"object": info.key, "problem": f"names commit {c}, which is missing, though it is still pinned ({_PINS}{rest})"})
                elif rest in released:
                    notes.append({"object": info.key, "kind": "released", "commit": c,
                                  "note": f"its commit {c} was collected after `unpin` released its pin"})
                else:
                    run = unquote(rest.rsplit("/", 1)[0]) if "/" in rest else "?"
                    bad.append({"object": info.key, "problem": (
                        f"names commit {c}, which is missing; its pin is gone but no `unpin` recorded releasing it "
                        f"(if it was released on purpose, `dataversion unpin --run {shlex.quote(run)}` records that)")})


def _erased_proven(repo: Repo, packing) -> np.ndarray:
    """The ids a packing marks erased; CorruptObjectError-free: an id no erasure record names
    is left out (its row then fails the digest check, as any missing payload)."""
    if not packing.erased:
        return np.empty(0, dtype="S16")
    from .erase import erased_record_ids, erasures

    proven = erased_record_ids(erasures(repo))
    return np.array(sorted(bytes.fromhex(h) for h in packing.erased if h in proven), dtype="S16")


def _denied_done(repo: Repo) -> np.ndarray:
    """Ids finished erasures removed: a row still holding one's payload is a leak."""
    from .erase import DONE, erased_record_ids, erasures

    done = erased_record_ids([r for r in erasures(repo) if r.get("state") == DONE])
    return np.array(sorted(bytes.fromhex(h) for h in done), dtype="S16")


def _verify_shard(repo: Repo, info, index: np.ndarray, content: np.ndarray, checked: dict[str, int],
                  erased: np.ndarray | None = None) -> str | None:
    try:
        data = repo.store.get(shard_key(info.id))
    except NotFoundError:
        return f"shard {info.id} is missing"
    checked["shards"] += 1
    from ..hashing import object_id

    actual = object_id(data)
    if actual != info.id:
        return f"shard {info.id} is corrupt: its bytes hash to {actual}"
    try:
        table = decode_shard(data, info.id)
    except DataversionError as e:
        return str(e)
    if table.num_rows != info.rows:
        return f"shard {info.id} has {table.num_rows} rows, its packing says {info.rows}"
    bad_payloads = payload_mismatches(table, repo.id_hash)
    checked["records"] += len(index)
    if len(bad_payloads):
        return f"shard {info.id}: {len(bad_payloads)} payload(s) do not hash to their record id, first at row {bad_payloads[0]}"
    rows = index["row"].astype(np.int64)
    if len(rows) and rows.max() >= table.num_rows:
        return f"shard {info.id}: the packing points past its last row"
    live = table.take(pa.array(rows))
    if (ids_as_numpy(live.column("record_id")) != index["id"]).any():
        return f"shard {info.id}: its rows do not hold the records the packing places there"
    leaked = _denied_done(repo)
    if len(leaked):
        hold = np.isin(index["id"], leaked) & ~(np.isin(index["id"], erased) if erased is not None else False)
        if hold.any():
            return (f"shard {info.id}: it holds the payload of an erased record (a writer stopped before "
                    "erasing from its commit; run `dataversion erase --resume`)")
    if erased is not None and len(erased):
        # an erased row (`dataversion erase`, proven by its erasure record) has no payload,
        # so no digest to check; every other row is checked as always
        gone = np.isin(index["id"], erased)
        if gone.any():
            no_text = pc.is_null(live.column("text")).to_numpy(zero_copy_only=False)
            no_data = pc.is_null(live.column("data")).to_numpy(zero_copy_only=False)
            if not (no_text & no_data)[gone].all():
                return f"shard {info.id}: a row the packing marks erased still holds its payload"
            live, content = live.filter(pa.array(~gone)), content[~gone]
    if (entry_digests(live) != content["digest"]).any():
        return f"shard {info.id}: record metadata or payload does not match the content tree's digests"
    return None
