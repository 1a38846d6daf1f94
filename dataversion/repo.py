"""The repository: plumbing (objects, refs, the commit writer) plus the porcelain users call.

`Repo` is an `ObjectDB` (typed, checked object reads and writes) with refs, ref resolution
and the commit writer (`dataversion.writer`). The operations users call live one job per
module in `dataversion.porcelain` and are bound here as methods, so `repo.log(...)` and
`porcelain.history.log(repo, ...)` are the same function.
"""

from __future__ import annotations

import json
import re
from typing import Any

from . import writer
from .errors import AmbiguousRefError, BadInputError, FormatError, NotFoundError
from .hashing import DEFAULT_ID_HASH, ID_HASHES, canonical_json, check_id_hash
from .objectdb import ObjectDB, blob_key, commit_key
from .objects import FORMAT_VERSION, ShardRef, utc_now
from .porcelain import branches as _branches
from .porcelain import checkout as _checkout
from .porcelain import erase as _erase
from .porcelain import gc as _gc
from .porcelain import history as _history
from .porcelain import records as _records
from .porcelain import verify as _verify
from .records import check_ids_hash
from .refs import HEADS, TAGS, Refs, validate_ref_name
from .shards import TARGET_SHARD_BYTES
from .stores import Store, normalize_url, open_store
from .writer import DEFAULT_BRANCH, CommitResult

__all__ = ["Repo", "CommitResult", "DEFAULT_BRANCH", "commit_key", "blob_key"]

CONFIG_KEY = "config.json"
UPGRADE_MAP_KEY = "upgrade/format1-ids.json"
_REF_RE = re.compile(r"^(?P<base>.+?)(?P<tilde>(~\d*)*)$")
_HEX_RE = re.compile(r"^[0-9a-f]{8,64}$")


class Repo(ObjectDB):
    """A dataversion repository on one store. Open with `Repo.open(url)`; create with `Repo.init(url)`."""

    def __init__(self, store: Store):
        super().__init__(store)
        self.refs = Refs(store)
        self._id_hash: str | None = None

    # ------------------------------------------------------------------ open / init
    @classmethod
    def init(cls, url: str, *, create_bucket: bool = False, id_hash: str | None = None, **store_options: Any) -> Repo:
        """Create a repository (idempotent: an existing one is opened unchanged).

        A local directory is made as needed; an S3 bucket only with `create_bucket=True`
        (NotFoundError "bucket B does not exist at ENDPOINT" otherwise). `id_hash` is the
        record-id hash (`hashing.ID_HASHES`, default xxh3-128), fixed for the repository's
        life: asking an existing repository for another one is a BadInputError."""
        if id_hash is not None:
            check_id_hash(id_hash)
        store = open_store(normalize_url(url), create=True, create_bucket=create_bucket, **store_options)
        config = {"format": FORMAT_VERSION, "default_branch": DEFAULT_BRANCH, "created": utc_now(),
                  "id_hash": id_hash or DEFAULT_ID_HASH}
        store.put_if_absent(CONFIG_KEY, canonical_json(config))
        repo = cls._checked(store, url)
        if id_hash is not None and repo.id_hash != id_hash:
            raise BadInputError(
                f"the repository at {store.url} already exists with record-id hash {repo.id_hash}; "
                f"it cannot become {id_hash}",
                hint="record ids are hashes of every record's content: create a new repository "
                f"with `dataversion init --id-hash {id_hash}` and add the data there",
            )
        return repo

    @classmethod
    def open(cls, url: str, *, any_format: bool = False, **store_options: Any) -> Repo:
        """Open an existing repository. NotFoundError if there is none at `url`; FormatError
        (naming `dataversion upgrade`) if it is in another format, unless `any_format`."""
        store = open_store(normalize_url(url), **store_options)
        if not store.exists(CONFIG_KEY):
            raise NotFoundError(
                f"no dataversion repository at {store.url}",
                hint=f"create one with `dataversion init --repo {url}`",
            )
        return cls(store) if any_format else cls._checked(store, url)

    @classmethod
    def _checked(cls, store: Store, url: str) -> Repo:
        repo = cls(store)
        config = repo._config()
        fmt = _format_of(config)
        if fmt != FORMAT_VERSION:
            raise FormatError(
                f"the repository at {store.url} is in format {fmt}; this dataversion reads format {FORMAT_VERSION}",
                hint=f"run `dataversion upgrade --repo {url}` to convert it in place" if fmt < FORMAT_VERSION
                else "upgrade dataversion",
            )
        repo._id_hash = repo._id_hash_of(config)  # an unknown one is refused here, not at a write
        return repo

    def _config(self) -> dict[str, Any]:
        try:
            config = json.loads(self.store.get(CONFIG_KEY))
        except ValueError:
            return {}
        return config if isinstance(config, dict) else {}

    @property
    def id_hash(self) -> str:
        """The repository's record-id hash (config `id_hash`; xxh3-128 when absent, as in
        every repository made before the option). FormatError for one this version lacks."""
        if self._id_hash is None:
            self._id_hash = self._id_hash_of(self._config())
        return self._id_hash

    def _id_hash_of(self, config: dict[str, Any]) -> str:
        value = config.get("id_hash", DEFAULT_ID_HASH)
        if value not in ID_HASHES:
            raise FormatError(
                f"the repository at {self.store.url} uses record-id hash {value!r}, "
                f"which this dataversion does not know ({', '.join(ID_HASHES)})",
                hint="upgrade dataversion",
            )
        return value

    def format_version(self) -> int:
        """The repository's format version (config.json)."""
        return _format_of(self._config())

    # ------------------------------------------------------------------ refs
    def branch_ref(self, branch: str) -> str:
        """The full ref name of a branch (validated)."""
        return HEADS + validate_ref_name(branch)

    def branch_tip(self, branch: str) -> str | None:
        value = self.refs.read(self.branch_ref(branch))
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
            if len(name) == 64 and self.store.exists(commit_key(name)):
                return name
            mapped = self._upgraded_id(name)
            if mapped is not None:
                return mapped
            matches = [i.key[len("commits/"):-len(".json")] for i in self.store.list(f"commits/{name}")]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise AmbiguousRefError(f"commit prefix {name} is ambiguous: matches {len(matches)} commits", hint="use more characters")
        hint = "list branches with `dataversion branch` and tags with `dataversion tag`"
        if name == DEFAULT_BRANCH and not self.refs.list(HEADS):
            hint = "the repository has no commits yet: `dataversion add PATH` or `dataversion ingest SOURCE`"
        raise NotFoundError(f"unknown ref {name!r}: no branch, tag or commit by that name", hint=hint)

    def _upgraded_id(self, old: str) -> str | None:
        """The format-2 id of a format-1 commit id (or unique prefix), from the map
        `dataversion upgrade` kept, so old checkpoints still resolve."""
        if len(old) < 8 or len(old) > 32:
            return None
        try:
            mapping = json.loads(self.store.get(UPGRADE_MAP_KEY))["commits"]
        except (NotFoundError, ValueError, KeyError, TypeError):
            return None
        hits = [v for k, v in mapping.items() if k.startswith(old)]
        return hits[0] if len(hits) == 1 else None

    # ------------------------------------------------------------------ the commit writer
    def commit(self, records: Any = None, *args: Any, **kwargs: Any) -> CommitResult:
        """`writer.commit` (see `writer._write_commit`), refusing (BadInputError) a record
        table whose ids were computed with another record-id hash than this repository's."""
        if records is not None:
            check_ids_hash(records, self.id_hash)
        return writer.commit(self, records, *args, **kwargs)

    def write_shards(self, table: Any, target_bytes: int = TARGET_SHARD_BYTES) -> list[ShardRef]:
        """`ObjectDB.write_shards`, refusing ids of another record-id hash (as `commit`)."""
        check_ids_hash(table, self.id_hash)
        return super().write_shards(table, target_bytes)

    # ------------------------------------------------------------------ porcelain
    add, rm = _records.add, _records.rm
    contains = ObjectDB.contains
    log, show, ls, ls_shards, diff = _history.log, _history.show, _history.ls, _history.ls_shards, _history.diff
    branches, tags = _branches.branches, _branches.tags
    create_branch, delete_branch, create_tag = _branches.create_branch, _branches.delete_branch, _branches.create_tag
    reset, reflog, revert = _branches.reset, _branches.reflog, _branches.revert
    checkout = _checkout.checkout
    gc = _gc.gc
    reachable_commits, root_commits = _gc.reachable_commits, _gc.root_commits
    verify = _verify.verify
    erase, erasures, resume_erasures = _erase.erase, _erase.erasures, _erase.resume

    def repack(self, refs: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        """`dataversion repack` (see `porcelain.repack.repack`)."""
        from .porcelain.repack import repack

        return repack(self, refs, **kwargs)


def _format_of(config: dict[str, Any]) -> int:
    try:
        return int(config.get("format", 1))
    except (ValueError, TypeError):
        return 1
