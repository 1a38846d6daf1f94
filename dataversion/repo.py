"""The repository: plumbing (objects, refs, stores) and the porcelain the CLI calls.

Write order for every commit: shards -> manifest -> commit -> history chunk -> ref (CAS).
A process killed anywhere before the ref update leaves only unreachable objects (garbage
for `gc`); the branch still names the old, complete commit.
"""

from __future__ import annotations

import json
import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import history
from .errors import (
    AmbiguousRefError,
    BadInputError,
    ConflictError,
    CorruptObjectError,
    NotFoundError,
)
from .hashing import DIGEST_MOD, canonical_json, digest_hex, digest_int, object_id
from .idset import IdSet
from .objects import Commit, Manifest, RecordSummary, ShardRef, utc_now
from .records import conform, ids_as_numpy, ids_to_hex
from .refs import HEADS, TAGS, Refs, default_author, short_ref, validate_ref_name
from .shards import (
    TARGET_SHARD_BYTES,
    decode_shard,
    describe_shard,
    entries_digest_of,
    entry_limbs,
    first_occurrences,
    limbs_digest,
    live_rows,
    modality_counts,
    parquet_bytes,
    plan_shard_rows,
    shard_key,
)
from .stores import Store, normalize_url, open_store

CONFIG_KEY = "config.json"
DEFAULT_BRANCH = "main"
_REF_RE = re.compile(r"^(?P<base>.+?)(?P<tilde>(~\d*)*)$")
_HEX_RE = re.compile(r"^[0-9a-f]{8,32}$")


def commit_key(commit_id: str) -> str:
    return f"commits/{commit_id}.json"


def manifest_key(manifest_id: str) -> str:
    return f"manifests/{manifest_id}.json"


def blob_key(blob_id: str) -> str:
    return f"blobs/{blob_id}"


@dataclass
class CommitResult:
    """What a commit operation did. `commit_id` is None when there was nothing to commit."""

    commit_id: str | None
    branch: str
    parent: str | None
    added: int = 0
    removed: int = 0
    already_present: int = 0
    bytes_written: int = 0
    shards_written: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "commit": self.commit_id,
            "branch": self.branch,
            "parent": self.parent,
            "added": self.added,
            "removed": self.removed,
            "already_present": self.already_present,
            "bytes_written": self.bytes_written,
            "shards_written": self.shards_written,
            "skipped": self.skipped,
        }


class _LRU(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class Repo:
    """A dataversion repository on one store. Open with `Repo.open(url)`; create with `Repo.init(url)`."""

    def __init__(self, store: Store):
        self.store = store
        self.url = store.url
        self.refs = Refs(store)
        self._commits: _LRU = _LRU(4096)
        self._manifests: _LRU = _LRU(64)
        self._idsets: _LRU = _LRU(4)
        self._shard_ids: _LRU = _LRU(256)
        self._chunks: _LRU = _LRU(16)

    # ------------------------------------------------------------------ open / init
    @classmethod
    def init(cls, url: str, **store_options: Any) -> Repo:
        """Create a repository (idempotent: an existing one is opened unchanged)."""
        store = open_store(normalize_url(url), create=True, **store_options)
        config = {"format": 1, "default_branch": DEFAULT_BRANCH, "created": utc_now()}
        store.put_if_absent(CONFIG_KEY, canonical_json(config))
        return cls(store)

    @classmethod
    def open(cls, url: str, **store_options: Any) -> Repo:
        """Open an existing repository. NotFoundError if there is none at `url`."""
        store = open_store(normalize_url(url), **store_options)
        if not store.exists(CONFIG_KEY):
            raise NotFoundError(
                f"no dataversion repository at {store.url}",
                hint=f"create one with `dataversion init --repo {url}`",
            )
        return cls(store)

    # ------------------------------------------------------------------ refs
    def _branch_ref(self, branch: str) -> str:
        return HEADS + validate_ref_name(branch)

    def branch_tip(self, branch: str) -> str | None:
        value = self.refs.read(self._branch_ref(branch))
        return value.commit_id if value else None

    def resolve(self, ref: str) -> str:
        """The commit id a ref names: branch, tag, commit id or unique prefix (8+ hex), with ~N."""
        ref = ref.strip()
        m = _REF_RE.match(ref)
        if not m or not ref:
            raise BadInputError(f"invalid ref {ref!r}")
        base, tilde = m.group("base"), m.group("tilde")
        commit_id = self._resolve_base(base)
        if tilde:
            steps = sum(int(t) if t else 1 for t in tilde.split("~")[1:])
            for i in range(steps):
                parents = self.read_commit(commit_id).parents
                if not parents:
                    raise NotFoundError(f"{ref}: {base} has only {i} ancestor(s)")
                commit_id = parents[0]
        return commit_id

    def _resolve_base(self, name: str) -> str:
        if name.startswith("refs/"):
            v = self.refs.read(name)
            if v:
                return v.commit_id
        for prefix in (HEADS, TAGS):
            try:
                v = self.refs.read(prefix + name)
            except BadInputError:
                v = None
            if v:
                return v.commit_id
        if _HEX_RE.match(name):
            if len(name) == 32 and self.store.exists(commit_key(name)):
                return name
            matches = [i.key[len("commits/"):-len(".json")] for i in self.store.list(f"commits/{name}")]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise AmbiguousRefError(f"commit prefix {name} is ambiguous: matches {len(matches)} commits", hint="use more characters")
        hint = "list branches with `dataversion branch` and tags with `dataversion tag`"
        if name == DEFAULT_BRANCH and not self.refs.list(HEADS):
            hint = "the repository has no commits yet: `dataversion add PATH` or `dataversion ingest SOURCE`"
        raise NotFoundError(f"unknown ref {name!r}: no branch, tag or commit by that name", hint=hint)

    # ------------------------------------------------------------------ objects
    def read_commit(self, commit_id: str) -> Commit:
        return self._read_commit_and_manifest_id(commit_id)[0]

    def manifest_id_of(self, commit_id: str) -> str:
        return self._read_commit_and_manifest_id(commit_id)[1]

    def _read_commit_and_manifest_id(self, commit_id: str) -> tuple[Commit, str]:
        cached = self._commits.get(commit_id)
        if cached is not None:
            return cached
        try:
            data = self.store.get(commit_key(commit_id))
        except NotFoundError:
            raise NotFoundError(f"commit {commit_id} not found in {self.url}") from None
        value = Commit.from_stored_bytes(data, commit_id)
        self._commits.put(commit_id, value)
        return value

    def read_manifest(self, commit_id: str) -> Manifest:
        """The manifest (shard list) of a commit."""
        manifest_id = self.manifest_id_of(commit_id)
        cached = self._manifests.get(manifest_id)
        if cached is not None:
            return cached
        try:
            data = self.store.get(manifest_key(manifest_id))
        except NotFoundError:
            raise NotFoundError(f"manifest {manifest_id} of commit {commit_id} is missing from {self.url}", hint="run `dataversion verify`") from None
        manifest = Manifest.from_bytes(data, manifest_id)
        self._manifests.put(manifest_id, manifest)
        return manifest

    def read_shard_bytes(self, shard: ShardRef | str) -> bytes:
        shard_id = shard.id if isinstance(shard, ShardRef) else shard
        try:
            return self.store.get(shard_key(shard_id))
        except NotFoundError:
            raise NotFoundError(f"shard {shard_id} is missing from {self.url}", hint="run `dataversion verify`") from None

    def read_shard(self, shard: ShardRef, columns: list[str] | None = None, *, with_deleted: bool = False) -> pa.Table:
        """The rows of a shard that the snapshot holds (deleted rows dropped)."""
        path = self.store.local_path(shard_key(shard.id))
        if path is not None:
            try:
                table = decode_shard(path, shard.id, columns)
            except FileNotFoundError:
                raise NotFoundError(f"shard {shard.id} is missing from {self.url}", hint="run `dataversion verify`") from None
        else:
            table = decode_shard(self.read_shard_bytes(shard), shard.id, columns)
        if table.num_rows != shard.rows:
            raise CorruptObjectError(f"shard {shard.id} has {table.num_rows} rows, its manifest says {shard.rows}")
        return table if with_deleted else live_rows(table, shard.deleted)

    def read_shard_columns(self, shard: ShardRef, columns: list[str], *, with_deleted: bool = False) -> pa.Table:
        """Some columns of a shard, reading only those (ranged reads on S3, not the whole file)."""
        if self.store.local_path(shard_key(shard.id)) is not None:
            return self.read_shard(shard, columns, with_deleted=with_deleted)
        import pyarrow.parquet as pq

        try:
            with self.store.open_input(shard_key(shard.id)) as f:
                table = pq.ParquetFile(f).read(columns=columns)
        except NotFoundError:
            raise NotFoundError(f"shard {shard.id} is missing from {self.url}", hint="run `dataversion verify`") from None
        except (pa.ArrowInvalid, OSError) as e:
            raise CorruptObjectError(f"shard {shard.id} is not a readable Parquet file: {e}") from e
        if table.num_rows != shard.rows:
            raise CorruptObjectError(f"shard {shard.id} has {table.num_rows} rows, its manifest says {shard.rows}")
        return table if with_deleted else live_rows(table, shard.deleted)

    def _shard_id_column(self, shard: ShardRef) -> np.ndarray:
        """All record ids of a shard (deleted rows included), cached."""
        ids = self._shard_ids.get(shard.id)
        if ids is None:
            table = self.read_shard_columns(shard, ["record_id"], with_deleted=True)
            ids = ids_as_numpy(table.column("record_id")).copy()
            self._shard_ids.put(shard.id, ids)
        return ids

    def record_ids(self, commit_id: str) -> IdSet:
        """The set of record ids a commit holds (cached per commit)."""
        cached = self._idsets.get(commit_id)
        if cached is not None:
            return cached
        parts = []
        for shard in self.read_manifest(commit_id).shards:
            ids = self._shard_id_column(shard)
            if shard.deleted:
                mask = np.ones(len(ids), dtype=bool)
                mask[list(shard.deleted)] = False
                ids = ids[mask]
            parts.append(ids)
        idset = IdSet(np.concatenate(parts) if parts else None)
        self._idsets.put(commit_id, idset)
        return idset

    def put_blob(self, data: bytes) -> str:
        """Store an attachment (rejects table, consumed-inputs list...) by content; returns its id."""
        blob_id = object_id(data)
        key = blob_key(blob_id)
        if not self.store.exists(key):
            self.store.put(key, data)
        return blob_id

    def read_blob(self, blob_id: str) -> bytes:
        data = self.store.get(blob_key(blob_id))
        if object_id(data) != blob_id:
            raise CorruptObjectError(f"blob {blob_id} is corrupt")
        return data

    def read_attachment(self, commit_id: str, name: str) -> bytes | None:
        blob_id = self.read_commit(commit_id).attachments.get(name)
        return self.read_blob(blob_id) if blob_id else None

    # ------------------------------------------------------------------ writing
    def write_shards(self, table: pa.Table, target_bytes: int = TARGET_SHARD_BYTES) -> list[ShardRef]:
        """Write a record table as shards (sorted, content-addressed) without committing.

        For distributed writers: each worker writes the shards of its id range, the driver
        passes the refs to `commit(prewritten_shards=...)`.
        """
        return self._write_shards(conform(table), target_bytes)[0]

    def _write_shards(self, table: pa.Table, target_bytes: int) -> tuple[list[ShardRef], int]:
        # Worker threads gather, encode and store each shard (Arrow, Parquet and file I/O
        # release the GIL) while this thread hashes the entries of every row: both cores busy.
        from concurrent.futures import ThreadPoolExecutor

        def encode_and_store(rows: np.ndarray) -> tuple[pa.Table, bytes, int]:
            part = table.take(pa.array(rows))
            data = parquet_bytes(part)
            key = shard_key(object_id(data))
            if self.store.exists(key):
                return part, data, 0
            self.store.put(key, data)
            return part, data, len(data)

        refs: list[ShardRef] = []
        written = 0
        order, cuts = plan_shard_rows(table, target_bytes)
        if table.num_rows < 4096:
            limbs = entry_limbs(table)
            for a, b in cuts:
                part, data, n = encode_and_store(order[a:b])
                written += n
                refs.append(describe_shard(part, data, limbs_digest(limbs[order[a:b]])))
            return refs, written
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(encode_and_store, order[a:b]) for a, b in cuts]
            limbs = entry_limbs(table)
            for (a, b), fut in zip(cuts, futures):
                part, data, n = fut.result()
                written += n
                ref = describe_shard(part, data, limbs_digest(limbs[order[a:b]]))
                refs.append(ref)
                self._shard_ids.put(ref.id, ids_as_numpy(part.column("record_id")).copy())
        return refs, written

    def _mark_deleted(self, shards: list[ShardRef], remove: Callable[[ShardRef, np.ndarray], np.ndarray]) -> tuple[list[ShardRef], int, np.ndarray]:
        """Apply deletions: `remove(shard, ids)` returns a mask of rows to drop."""
        out: list[ShardRef] = []
        removed = 0
        removed_ids = []
        for shard in shards:
            ids = self._shard_id_column(shard)
            drop = remove(shard, ids)
            if shard.deleted:
                drop[list(shard.deleted)] = False
            n = int(drop.sum())
            if not n:
                out.append(shard)
                continue
            removed += n
            removed_ids.append(ids[drop])
            deleted = tuple(sorted(set(shard.deleted) | set(np.flatnonzero(drop).tolist())))
            if len(deleted) == shard.rows:
                continue
            live = live_rows(self.read_shard_columns(shard, ["record_id", "modality", "source", "label", "meta"], with_deleted=True), deleted)
            out.append(
                ShardRef(
                    id=shard.id, rows=shard.rows, size=shard.size, min_id=shard.min_id, max_id=shard.max_id,
                    digest=digest_hex(entries_digest_of(live)), by_modality=modality_counts(live), deleted=deleted,
                )
            )
        return out, removed, (np.concatenate(removed_ids) if removed_ids else np.empty(0, dtype="S16"))

    def commit(
        self,
        records: pa.Table | None = None,
        *,
        branch: str = DEFAULT_BRANCH,
        message: str = "",
        remove_ids: np.ndarray | list[bytes] | None = None,
        remove_where: Callable[[pa.Table], np.ndarray] | None = None,
        remove_columns: list[str] | None = None,
        counts: dict[str, Any] | None = None,
        provenance: dict[str, Any] | None = None,
        attachments: dict[str, bytes] | None = None,
        author: str | None = None,
        expected_parent: str | None | type[...] = ...,
        allow_empty: bool = False,
        target_shard_bytes: int = TARGET_SHARD_BYTES,
        prewritten_shards: list[ShardRef] | None = None,
    ) -> CommitResult:
        """Append `records` to `branch` (ids already present are not stored again) and/or remove some.

        - `remove_ids`: record ids to drop; `remove_where(table) -> mask` drops rows of the
          parent's shards read with `remove_columns` (e.g. by source prefix).
        - `expected_parent`: if given, the branch must still point there (None: must not exist).
        - `prewritten_shards`: shards already written to the store by distributed workers
          (see `write_shards`); the caller guarantees their records are new to the parent.
        Returns a CommitResult whose commit_id is None when nothing changed (unless allow_empty).
        Raises ConflictError if another writer moved the branch meanwhile.
        """
        ref_name = self._branch_ref(branch)
        current = self.refs.read(ref_name)
        parent = current.commit_id if current else None
        if expected_parent is not ... and expected_parent != parent:
            raise ConflictError(f"branch {branch} is at {parent}, expected {expected_parent}", hint="re-run to build on the new tip")
        parent_manifest = self.read_manifest(parent) if parent else Manifest(RecordSummary(0, digest_hex(0), {}), ())
        parent_ids = self.record_ids(parent) if parent else IdSet()
        result = CommitResult(None, branch, parent)

        # 1. removals mark rows deleted in existing shards (never rewriting a shard)
        shards = list(parent_manifest.shards)
        removed_ids = np.empty(0, dtype="S16")
        if remove_ids is not None and len(remove_ids):
            want = np.unique(np.asarray(remove_ids, dtype="S16") if not isinstance(remove_ids, np.ndarray) else remove_ids)
            shards, result.removed, removed_ids = self._mark_deleted(shards, lambda s, ids: np.isin(ids, want))
        if remove_where is not None:
            cols = remove_columns or ["record_id", "source"]

            def by_predicate(shard: ShardRef, ids: np.ndarray) -> np.ndarray:
                table = self.read_shard_columns(shard, cols, with_deleted=True)
                return np.asarray(remove_where(table), dtype=bool).copy()

            shards, n, more = self._mark_deleted(shards, by_predicate)
            result.removed += n
            removed_ids = np.concatenate([removed_ids, more])

        # 2. new records: drop duplicates within the batch and ids the parent already holds
        new_table = None
        if records is not None and records.num_rows:
            table = conform(records)
            ids = ids_as_numpy(table.column("record_id"))
            keep = first_occurrences(ids)
            remaining = parent_ids.with_removed(removed_ids) if len(removed_ids) else parent_ids
            present = remaining.contains(ids)
            result.already_present = int((keep & present).sum())
            keep &= ~present
            if keep.all():
                new_table = table
            elif keep.any():
                new_table = table.filter(pa.array(keep))
        new_refs: list[ShardRef] = []
        if new_table is not None:
            new_refs, result.bytes_written = self._write_shards(new_table, target_shard_bytes)
            result.shards_written = len(new_refs)
            result.added = new_table.num_rows
        for ref in prewritten_shards or ():
            if not self.store.exists(shard_key(ref.id)):
                raise NotFoundError(f"shard {ref.id} was not written before the commit")
            new_refs.append(ref)
            result.added += ref.live_rows
        if not result.added and not result.removed and not allow_empty:
            return result

        # 3. manifest: parent's shards (with deletions) + new shards. The summary is the
        # parent's plus the shards that came in minus the ones that went out: O(change).
        all_shards = tuple(shards) + tuple(new_refs)
        before = {id(s) for s in parent_manifest.shards}
        after = {id(s) for s in all_shards}
        gone = [s for s in parent_manifest.shards if id(s) not in after]
        came = [s for s in all_shards if id(s) not in before]
        by_mod: Counter[str] = Counter(parent_manifest.records.by_modality)
        digest = digest_int(parent_manifest.records.digest)
        count = parent_manifest.records.count
        for sign, group in ((1, came), (-1, gone)):
            for s in group:
                for k, v in s.by_modality.items():
                    by_mod[k] += sign * v
                digest += sign * digest_int(s.digest)
                count += sign * s.live_rows
        summary = RecordSummary(
            count=count,
            digest=digest_hex(digest % DIGEST_MOD),
            by_modality={k: v for k, v in sorted(by_mod.items()) if v},
        )
        manifest = Manifest(summary, all_shards)
        manifest_bytes = manifest.to_bytes()
        manifest_id = object_id(manifest_bytes)
        self.store.put_if_absent(manifest_key(manifest_id), manifest_bytes)
        self._manifests.put(manifest_id, manifest)

        attachment_ids = {name: self.put_blob(data) for name, data in (attachments or {}).items()}
        base_counts = {"added": result.added, "removed": result.removed, "already_present": result.already_present}
        commit = Commit(
            parents=(parent,) if parent else (),
            author=author or default_author(),
            time=utc_now(),
            message=message,
            records=summary,
            counts={**base_counts, **(counts or {})},
            provenance=provenance or {},
            attachments=attachment_ids,
        )
        commit_id = commit.id
        self.store.put_if_absent(commit_key(commit_id), commit.to_stored_bytes(manifest_id))
        self._commits.put(commit_id, (commit, manifest_id))
        parent_chunk = (self._chunks.get(parent) or history.read_chunk(self.store, parent)) if parent else None
        chunk = history.build_chunk(commit.summary(commit_id), parent_chunk, parent)
        history.write_chunk(self.store, commit_id, chunk)
        self._chunks.put(commit_id, chunk)

        # 4. the ref: compare-and-swap from the tip we built on
        self.refs.set_if_equals(ref_name, current, commit_id, reason=f"commit: {message}".strip())
        if not prewritten_shards:
            new_ids = ids_as_numpy(new_table.column("record_id")) if new_table is not None else np.empty(0, dtype="S16")
            child = (parent_ids.with_removed(removed_ids) if len(removed_ids) else parent_ids).with_added(new_ids)
            self._idsets.put(commit_id, child)
        result.commit_id = commit_id
        return result

    # ------------------------------------------------------------------ porcelain: add / rm
    def add(
        self,
        paths: list[str],
        *,
        branch: str = DEFAULT_BRANCH,
        message: str = "",
        sync: bool = False,
        text_field: str = "text",
        progress: Any = None,
    ) -> CommitResult:
        """Commit the records found under local `paths` (one per file, one per JSONL line).

        With `sync`, the snapshot becomes equal to `paths`: records whose content or
        metadata is no longer there are removed.
        """
        from .scan import scan_tree

        scan = scan_tree(paths, text_field=text_field, progress=progress)
        table = scan.table
        remove_where = None
        if sync:
            wanted = {}
            for rid, src, lab, meta, mod in zip(
                ids_to_hex(ids_as_numpy(table.column("record_id"))),
                table.column("source").to_pylist(), table.column("label").to_pylist(),
                table.column("meta").to_pylist(), table.column("modality").to_pylist(),
            ):
                wanted.setdefault(rid, (mod, src, lab, meta))

            def remove_where(t: pa.Table) -> np.ndarray:  # noqa: F811
                hexes = ids_to_hex(ids_as_numpy(t.column("record_id")))
                rows = zip(hexes, t.column("modality").to_pylist(), t.column("source").to_pylist(),
                           t.column("label").to_pylist(), t.column("meta").to_pylist())
                return np.array([wanted.get(h) != (m, s, lab, me) for h, m, s, lab, me in rows], dtype=bool)

        counts = {"inputs": scan.inputs, "rejected": len(scan.skipped)}
        result = self.commit(
            table,
            branch=branch,
            message=message or f"add {' '.join(paths)}",
            remove_where=remove_where,
            remove_columns=["record_id", "modality", "source", "label", "meta"],
            counts=counts,
            attachments={"rejects": canonical_json([s.to_dict() for s in scan.skipped])} if scan.skipped else None,
        )
        result.skipped = [s.to_dict() for s in scan.skipped]
        return result

    def rm(self, *, branch: str = DEFAULT_BRANCH, ids: list[str] | None = None, source_prefixes: list[str] | None = None, message: str = "") -> CommitResult:
        """Remove records by id (hex) or by source prefix."""
        from .records import hex_to_id

        if not ids and not source_prefixes:
            raise BadInputError("nothing to remove: give record ids or --source prefixes")
        raw = np.array([hex_to_id(h) for h in ids or []], dtype="S16")
        prefixes = tuple(source_prefixes or ())

        def by_source(t: pa.Table) -> np.ndarray:
            srcs = t.column("source").to_pylist()
            return np.array([s is not None and s.startswith(prefixes) for s in srcs], dtype=bool)

        if self.branch_tip(branch) is None:
            raise NotFoundError(f"branch {branch} does not exist")
        return self.commit(
            None,
            branch=branch,
            message=message or "rm",
            remove_ids=raw if len(raw) else None,
            remove_where=by_source if prefixes else None,
            remove_columns=["source"],
        )

    # ------------------------------------------------------------------ porcelain: history
    def log(self, ref: str = DEFAULT_BRANCH, n: int | None = None) -> list[dict[str, Any]]:
        """Commit summaries from `ref` back along first parents, newest first."""
        commit_id: str | None = self.resolve(ref)
        out: list[dict[str, Any]] = []
        while commit_id and (n is None or len(out) < n):
            chunk = history.read_chunk(self.store, commit_id)
            entries = chunk.entries() if chunk is not None else []
            if not entries or entries[0].get("id") != commit_id:
                commit = self.read_commit(commit_id)
                out.append(commit.summary(commit_id))
                commit_id = commit.parents[0] if commit.parents else None
                continue
            out.extend(entries if n is None else entries[: n - len(out)])
            commit_id = chunk.next
        return out

    def show(self, ref: str) -> dict[str, Any]:
        commit_id = self.resolve(ref)
        commit, manifest_id = self._read_commit_and_manifest_id(commit_id)
        d = commit.summary(commit_id)
        manifest = self.read_manifest(commit_id)
        d["manifest"] = manifest_id
        d["shards"] = len(manifest.shards)
        d["refs"] = sorted(short_ref(k) for k, v in self.refs.list().items() if v == commit_id)
        return d

    def ls(self, ref: str, *, columns: tuple[str, ...] = ("record_id", "modality", "source", "label")) -> Iterator[dict[str, Any]]:
        """Every record of a snapshot (metadata only, no payload)."""
        commit_id = self.resolve(ref)
        read_cols = [c for c in columns if c != "size"] + (["text", "data"] if "size" in columns else [])
        for shard in self.read_manifest(commit_id).shards:
            table = self.read_shard_columns(shard, read_cols)
            hexes = ids_to_hex(ids_as_numpy(table.column("record_id")))
            cols = {c: table.column(c).to_pylist() for c in columns if c not in ("record_id", "size")}
            if "size" in columns:
                t_len = pc.binary_length(table.column("text")).to_pylist()
                d_len = pc.binary_length(table.column("data")).to_pylist()
                cols["size"] = [a if a is not None else b for a, b in zip(t_len, d_len)]
            for i, h in enumerate(hexes):
                yield {"record_id": h, **{c: v[i] for c, v in cols.items()}}

    def ls_shards(self, ref: str) -> list[dict[str, Any]]:
        commit_id = self.resolve(ref)
        return [{**s.to_dict(), "live_rows": s.live_rows, "key": shard_key(s.id)} for s in self.read_manifest(commit_id).shards]

    def diff(self, a: str, b: str, *, records: bool = False) -> dict[str, Any]:
        """Records added and removed from `a` to `b`.

        Shards both snapshots use identically are never read: only shards (or deletion
        vectors) that differ are, so the cost follows the change, not the snapshot size.
        """
        ca, cb = self.resolve(a), self.resolve(b)
        ma, mb = self.read_manifest(ca), self.read_manifest(cb)
        sa = {s.id: s for s in ma.shards}
        sb = {s.id: s for s in mb.shards}
        cand_a: list[pa.Table] = []
        cand_b: list[pa.Table] = []
        for sid, ref in sa.items():
            other = sb.get(sid)
            if other is None:
                cand_a.append(self._diff_rows(ref, None))
            elif other.deleted != ref.deleted:
                da, db = set(ref.deleted), set(other.deleted)
                if db - da:
                    cand_a.append(self._diff_rows(ref, sorted(db - da)))
                if da - db:
                    cand_b.append(self._diff_rows(other, sorted(da - db)))
        for sid, ref in sb.items():
            if sid not in sa:
                cand_b.append(self._diff_rows(ref, None))
        ta = pa.concat_tables(cand_a) if cand_a else None
        tb = pa.concat_tables(cand_b) if cand_b else None
        ids_a = ids_as_numpy(ta.column("record_id")) if ta is not None else np.empty(0, dtype="S16")
        ids_b = ids_as_numpy(tb.column("record_id")) if tb is not None else np.empty(0, dtype="S16")
        removed_mask = ~np.isin(ids_a, ids_b)
        added_mask = ~np.isin(ids_b, ids_a)
        by_mod: dict[str, dict[str, int]] = {}
        for name, table, mask in (("removed", ta, removed_mask), ("added", tb, added_mask)):
            if table is None:
                continue
            for mod, cnt in Counter(np.asarray(table.column("modality").to_pylist(), dtype=object)[mask].tolist()).items():
                by_mod.setdefault(mod, {"added": 0, "removed": 0})[name] = cnt
        out: dict[str, Any] = {
            "from": ca,
            "to": cb,
            "added": int(added_mask.sum()),
            "removed": int(removed_mask.sum()),
            "by_modality": dict(sorted(by_mod.items())),
            "shards_read": len(cand_a) + len(cand_b),
        }
        if records:
            out["records"] = {
                "added": sorted(ids_to_hex(ids_b[added_mask])),
                "removed": sorted(ids_to_hex(ids_a[removed_mask])),
            }
        return out

    def _diff_rows(self, shard: ShardRef, rows: list[int] | None) -> pa.Table:
        table = self.read_shard_columns(shard, ["record_id", "modality"], with_deleted=rows is not None)
        return table.take(pa.array(rows, pa.int64())) if rows is not None else table

    # ------------------------------------------------------------------ porcelain: refs
    def branches(self) -> dict[str, str]:
        return {k[len(HEADS):]: v for k, v in self.refs.list(HEADS).items()}

    def tags(self) -> dict[str, str]:
        return {k[len(TAGS):]: v for k, v in self.refs.list(TAGS).items()}

    def create_branch(self, name: str, ref: str) -> str:
        commit_id = self.resolve(ref)
        self.refs.set_if_equals(self._branch_ref(name), None, commit_id, reason=f"branch: created from {ref}")
        return commit_id

    def delete_branch(self, name: str) -> str:
        return self.refs.delete(self._branch_ref(name), reason="branch: deleted")

    def create_tag(self, name: str, ref: str) -> str:
        commit_id = self.resolve(ref)
        self.refs.set_if_equals(TAGS + validate_ref_name(name), None, commit_id, reason=f"tag: {ref}")
        return commit_id

    def reset(self, branch: str, ref: str) -> tuple[str | None, str]:
        """Move `branch` to `ref` (rollback); recorded in the reflog. Returns (old, new)."""
        target = self.resolve(ref)
        full = self._branch_ref(branch)
        current = self.refs.read(full)
        if current is None:
            raise NotFoundError(f"branch {branch} does not exist")
        self.refs.set_if_equals(full, current, target, reason=f"reset: moving to {ref}")
        return current.commit_id, target

    def reflog(self, branch: str | None = None) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.refs.reflog(self._branch_ref(branch) if branch else None)]

    def revert(self, ref: str, *, branch: str = DEFAULT_BRANCH, message: str = "") -> CommitResult:
        """A new commit on `branch` that undoes what `ref` changed relative to its first parent."""
        target = self.resolve(ref)
        parents = self.read_commit(target).parents
        if not parents:
            raise BadInputError(f"cannot revert {ref}: it is a root commit", hint="use `dataversion rm` or reset instead")
        d = self.diff(parents[0], target, records=True)
        add_back = {bytes.fromhex(h) for h in d["records"]["removed"]}
        restore = None
        if add_back:
            parts = []
            for shard in self.read_manifest(parents[0]).shards:
                t = self.read_shard(shard)
                ids = ids_as_numpy(t.column("record_id"))
                mask = np.isin(ids, np.array(sorted(add_back), dtype="S16"))
                if mask.any():
                    parts.append(t.filter(pa.array(mask)))
            restore = pa.concat_tables(parts) if parts else None
        remove = np.array([bytes.fromhex(h) for h in d["records"]["added"]], dtype="S16")
        return self.commit(
            restore,
            branch=branch,
            message=message or f"revert {target[:12]}",
            remove_ids=remove if len(remove) else None,
            provenance={"reverts": target},
        )

    # ------------------------------------------------------------------ porcelain: checkout
    def checkout(self, ref: str, directory: str, *, progress: Any = None) -> dict[str, Any]:
        from .checkout import materialize

        commit_id = self.resolve(ref)
        return materialize(self, commit_id, directory, progress=progress)

    # ------------------------------------------------------------------ maintenance
    def gc(self, *, dry_run: bool = False, grace_seconds: float = 3600.0, expire_reflog_seconds: float | None = None) -> dict[str, Any]:
        """Delete unreachable objects older than `grace_seconds` (see maintenance.collect_garbage)."""
        from .maintenance import collect_garbage

        return collect_garbage(self, dry_run=dry_run, grace_seconds=grace_seconds, expire_reflog_seconds=expire_reflog_seconds)

    def verify(self, ref: str | None = None, *, progress: Any = None) -> dict[str, Any]:
        from .maintenance import verify

        return verify(self, ref, progress=progress)

    def reachable_commits(self, roots: list[str]) -> set[str]:
        """Every commit reachable from `roots` through parents (missing ones are skipped)."""
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            cid = stack.pop()
            if cid in seen:
                continue
            seen.add(cid)
            try:
                stack.extend(self.read_commit(cid).parents)
            except (NotFoundError, CorruptObjectError):
                continue
        return seen

    def root_commits(self, skip_reflog: set[str] = frozenset()) -> set[str]:
        """Commits named by a ref, a reflog entry or a pin (lineage): the gc roots."""
        roots = set(self.refs.list().values())
        for e in self.refs.reflog(skip=skip_reflog):
            roots.update(x for x in (e.old, e.new) if x)
        for info in self.store.list("pins/"):
            try:
                roots.update(json.loads(self.store.get(info.key)).get("commits", []))
            except (NotFoundError, ValueError):
                continue
        return roots
