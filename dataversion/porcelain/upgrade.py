"""`dataversion upgrade`: convert a format-1 repository (dataversion 0.1) to format 2 in place.

Format 1 named commits by xxh3-128 of their fields, with an additive record digest and a
manifest pointer beside the hashed part. Format 2 names them by SHA-256 and binds them to a
content tree (see docs/ARCHITECTURE.md). The upgrade, for every format-1 commit, parents
first: reads its manifest's live rows (shards are kept as they are: same bytes, same names),
builds its content tree, packing (index + shard table) and pointer, and writes the format-2
commit with the same parents (mapped), author, time, message, counts, provenance and
attachments. Then it re-points every ref, rewrites the commit ids in the reflog, lineage
entries and pins, stores the old -> new id map (`upgrade/format1-ids.json`, which
`Repo.resolve` reads so old checkpoints' commit ids still resolve), sets the config's
format to 2, and only then deletes the format-1 commits, manifests and history chunks.

Idempotent and crash-safe: every object written is content-addressed and deterministic, and
each rewrite maps only format-1 ids, so a rerun after a crash finishes the job.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import xxhash

from ..errors import BadInputError, CorruptObjectError, NotFoundError
from ..hashing import canonical_json
from ..objects import FORMAT_VERSION, Commit, RecordSummary
from ..packing import Packing, point_packing, shard_prefix, shard_table_key
from ..records import ids_as_numpy
from ..shards import decode_shard, entry_digests, modality_counts
from ..tree import ENTRY, INDEX, SHARDS, TreeWriter

if TYPE_CHECKING:
    from ..repo import Repo

UPGRADE_MAP_KEY = "upgrade/format1-ids.json"


def _v1_id(hashed: dict[str, Any]) -> str:
    return xxhash.xxh3_128_hexdigest(canonical_json(hashed))


def _read_v1_commits(repo: Repo) -> dict[str, tuple[dict[str, Any], str]]:
    out = {}
    for info in repo.store.list("commits/"):
        cid = info.key[len("commits/") : -len(".json")]
        if len(cid) != 32:
            continue
        d = json.loads(repo.store.get(info.key))
        hashed, manifest = d["commit"], d["manifest"]
        if _v1_id(hashed) != cid:
            raise CorruptObjectError(f"format-1 commit {cid} is corrupt: its fields hash to {_v1_id(hashed)}",
                                     hint="restore it before upgrading")
        out[cid] = (hashed, manifest)
    return out


def _topological(commits: dict[str, tuple[dict[str, Any], str]]) -> list[str]:
    order, done = [], set()
    for start in sorted(commits):
        stack = [(start, False)]
        while stack:
            cid, expanded = stack.pop()
            if cid in done or cid not in commits:
                continue
            if expanded:
                done.add(cid)
                order.append(cid)
                continue
            stack.append((cid, True))
            stack.extend((p, False) for p in commits[cid][0]["parents"] if p not in done)
    return order


def upgrade(repo: Repo, *, progress: Any = None) -> dict[str, Any]:
    """Convert the repository to format 2 in place; returns {"from", "to", "commits": {old: new}}.

    Raises BadInputError if it is in a format this version cannot convert."""
    fmt = repo.format_version()
    if fmt == FORMAT_VERSION and not any(len(i.key) == len("commits/") + 32 + 5 for i in repo.store.list("commits/")):
        return {"from": fmt, "to": FORMAT_VERSION, "commits": _saved_map(repo), "already": True}
    if fmt not in (1, FORMAT_VERSION):
        raise BadInputError(f"cannot upgrade a repository in format {fmt}")
    commits = _read_v1_commits(repo)
    mapping: dict[str, str] = dict(_saved_map(repo))
    entries_of: dict[str, tuple[np.ndarray, np.ndarray, dict[str, int]]] = {}  # shard use -> (content, index, mods)
    for old in _topological(commits):
        hashed, manifest_id = commits[old]
        manifest = json.loads(repo.store.get(f"manifests/{manifest_id}.json"))
        content, index, table, mods = [], [], [], {}
        for s in manifest["shards"]:
            use = s["id"] + ":" + ",".join(map(str, s.get("deleted", ())))
            if use not in entries_of:
                t = decode_shard(repo.read_shard_bytes(s["id"]), s["id"])
                rows = np.arange(t.num_rows)
                if s.get("deleted"):
                    keep = np.ones(t.num_rows, bool)
                    keep[list(s["deleted"])] = False
                    rows = rows[keep]
                live = t.take(pa.array(rows))
                e = np.zeros(len(rows), ENTRY)
                e["id"], e["digest"] = ids_as_numpy(live.column("record_id")), entry_digests(live)
                ix = np.zeros(len(rows), INDEX)
                ix["id"], ix["shard"], ix["row"] = e["id"], shard_prefix(s["id"]), rows.astype(np.uint32)
                entries_of[use] = (e, ix, modality_counts(live))
            e, ix, m = entries_of[use]
            content.append(e)
            index.append(ix)
            for k, v in m.items():
                mods[k] = mods.get(k, 0) + v
            if len(e):
                st = np.zeros(1, SHARDS)
                st[0] = (shard_table_key(s["id"]), bytes.fromhex(s["id"]), int(s["rows"]), len(e), int(s["size"]))
                table.append(st)
        root = TreeWriter(repo.store, ENTRY).build(np.concatenate(content) if content else np.empty(0, ENTRY))
        count = int(sum(len(c) for c in content))
        if count != int(hashed["records"]["count"]):
            raise CorruptObjectError(f"format-1 commit {old}: its manifest holds {count} records, the commit says {hashed['records']['count']}")
        index_root = TreeWriter(repo.store, INDEX).build(np.concatenate(index) if index else np.empty(0, INDEX))
        shards_root = TreeWriter(repo.store, SHARDS).build(np.concatenate(table) if table else np.empty(0, SHARDS))
        packing = Packing(root, count, index_root, shards_root)
        if count:
            point_packing(repo.store, root, repo.write_packing(packing))
        provenance = dict(hashed.get("provenance", {}))
        if provenance.get("reverts") in mapping:
            provenance["reverts"] = mapping[provenance["reverts"]]
        commit = Commit(
            parents=tuple(mapping[p] for p in hashed["parents"]),
            author=hashed["author"], time=hashed["time"], message=hashed["message"],
            records=RecordSummary(count, root, {k: v for k, v in sorted(mods.items()) if v}),
            counts=hashed.get("counts", {}), provenance=provenance, attachments=hashed.get("attachments", {}),
        )
        new = repo.write_commit(commit)
        repo.write_history(new, commit, commit.parents[0] if commit.parents else None)
        mapping[old] = new
        if progress is not None:
            progress.update(1)
    repo.store.put(UPGRADE_MAP_KEY, canonical_json({"commits": mapping}))
    _rewrite_refs(repo, mapping)
    _rewrite_json(repo, "reflog/", mapping, ("old", "new"))
    _rewrite_json(repo, "lineage/", mapping, ("commit",))
    _rewrite_json(repo, "pins/", mapping, ("commits",))
    config = json.loads(repo.store.get("config.json"))
    config["format"] = FORMAT_VERSION
    config["upgraded_from"] = 1
    repo.store.put("config.json", canonical_json(config))
    for prefix in ("commits/", "history/"):
        for info in list(repo.store.list(prefix)):
            name = info.key.rsplit("/", 1)[1].split(".")[0]
            if len(name) == 32:
                repo.store.delete(info.key)
    for info in list(repo.store.list("manifests/")):
        repo.store.delete(info.key)
    return {"from": 1, "to": FORMAT_VERSION, "commits": mapping, "already": False}


def _saved_map(repo: Repo) -> dict[str, str]:
    try:
        return dict(json.loads(repo.store.get(UPGRADE_MAP_KEY))["commits"])
    except NotFoundError:
        return {}


def _rewrite_refs(repo: Repo, mapping: dict[str, str]) -> None:
    for info in list(repo.store.list("refs/")):
        data, token = repo.store.get_versioned(info.key)
        old = data.decode().strip()
        if old in mapping:
            repo.store.put_if_match(info.key, (mapping[old] + "\n").encode(), token)


def _rewrite_json(repo: Repo, prefix: str, mapping: dict[str, str], fields: tuple[str, ...]) -> None:
    for info in list(repo.store.list(prefix)):
        if not info.key.endswith(".json"):
            continue
        d = json.loads(repo.store.get(info.key))
        changed = False
        for f in fields:
            v = d.get(f)
            if isinstance(v, str) and v in mapping:
                d[f], changed = mapping[v], True
            elif isinstance(v, list) and any(x in mapping for x in v):
                d[f], changed = [mapping.get(x, x) for x in v], True
        if changed:
            # lineage entries and pins are written with sorted keys, compact separators
            repo.store.put(info.key, json.dumps(d, sort_keys=True, separators=(",", ":")).encode("utf-8"))


