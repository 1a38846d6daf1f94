"""`dv://`: an fsspec filesystem over the commits of a repository, read-only.

    dv://REF/part-00000-<shard>.parquet   one Parquet file per shard: the commit's live records
                                          (record_id, modality, source, label, meta, text, data)
    dv://REF/files/<source path>          the original objects, as `dataversion checkout` writes them
                                          (not listed under dv://REF/, so a directory read of
                                          dv://REF/ is the Parquet files alone)
    dv://                                 the branches and tags, as directories

The repository is `storage_options={"repo": URL}` (other options go to `Repo.open`: S3
`endpoint`, `access_key`, `secret_key`) or DATAVERSION_REPO; `pinned={ref: commit id}`
fixes refs up front (a pickled instance carries the refs it resolved); `cache_bytes` bounds
the verified bytes kept per commit (default 256 MiB; an open file holds its own). REF is a branch, tag, commit id
or prefix (a '/' in a branch name written `%2F`). A filesystem instance resolves each ref
once and keeps serving that commit: `dv://<commit id>/` names immutable bytes, so fsspec's
caching layers (`filecache::dv://...`, `blockcache::`) can keep them (`ukey` is derived from
the commit id and the shard ids).

Every byte served went through the repository's verified reader path: a shard is read whole
and hashed against the id the commit's packing names before any range of it is returned; a
mismatch raises CorruptObjectError. A shard without deleted rows is served as its own bytes
(zero copy beyond the read); a shard with deleted or erased rows is served as the rows
readers serve (neither deleted nor erased) rewritten.

Registered under the protocol `dv` by the `fsspec.specs` entry point, and on import of
this module (for an install whose entry points are not refreshed yet).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import unquote

import fsspec
from fsspec.spec import AbstractFileSystem

from ..errors import NotFoundError
from ..hashing import object_id
from ..stores.seekable import ReadOnlySeekable
from .snapshot import SnapshotView

PROTOCOL = "dv"
FILES_DIR = "files"


class _ServedFile(ReadOnlySeekable):
    """A read-only file over verified bytes (a read-only memoryview, of a memory-mapped
    shard for a file:// store). `read_buffer` hands pyarrow slices without copying them
    (pyarrow's PythonFile uses it when present); `readinto` copies once, into the
    caller's buffer."""

    def __init__(self, data: bytes | memoryview, path: str):
        view = memoryview(data)
        super().__init__(len(view))
        self._view = view
        self.path = path
        self.name = path
        self.mode = "rb"

    def _read_at(self, offset: int, n: int) -> memoryview:
        return self._view[offset : offset + n]

    def read_buffer(self, n: int | None = -1) -> memoryview:
        out = self._take(n)
        return out if isinstance(out, memoryview) else memoryview(out)

    read1 = ReadOnlySeekable.read

    def close(self) -> None:
        super().close()
        self._view = memoryview(b"")  # the mapping is the cache's, not ours to release


class DataversionFileSystem(AbstractFileSystem):
    """fsspec filesystem of one repository's commits (read-only). See the module docstring."""

    protocol = (PROTOCOL,)
    root_marker = ""
    cachable = True

    def __init__(self, repo: str | None = None, cache_bytes: int = 256 * 2**20,
                 pinned: dict[str, str] | None = None, **repo_options: Any):
        super().__init__(repo=repo, cache_bytes=cache_bytes, pinned=pinned, **repo_options)
        from ..repo import Repo

        url = repo or os.environ.get("DATAVERSION_REPO")
        if not url:
            raise ValueError("dv:// needs a repository: storage_options={'repo': URL} or DATAVERSION_REPO")
        self.repo_url = url
        self.repo = Repo.open(url, **repo_options)
        self.cache_bytes = int(cache_bytes)
        self._resolved: dict[str, str] = dict(pinned or {})  # ref -> commit id, fixed once seen
        self._views: OrderedDict[str, SnapshotView] = OrderedDict()
        self._dirs: dict[str, dict[str, set[str]]] = {}
        self._lock = threading.Lock()

    def __reduce__(self):
        # A copy in another process (Dask, datasets' num_proc, pyarrow workers) serves the
        # commits this instance resolved, even if a branch moved since.
        with self._lock:
            pinned = {**(self.storage_options.get("pinned") or {}), **self._resolved}
        options = {**self.storage_options, "pinned": pinned, "skip_instance_cache": True}
        return _rebuild, (type(self), self.storage_args, options)

    # ------------------------------------------------------------------ paths
    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith(f"{PROTOCOL}://"):
            path = path[len(PROTOCOL) + 3 :]
        elif path.startswith(f"{PROTOCOL}::"):
            path = path[len(PROTOCOL) + 2 :]
        return path.strip("/")

    @classmethod
    def _get_kwargs_from_urls(cls, path):
        return {}

    def unstrip_protocol(self, name: str) -> str:
        return f"{PROTOCOL}://{name}"

    def resolve(self, ref: str) -> str:
        """The commit id `ref` names, resolved once per filesystem instance."""
        with self._lock:
            commit_id = self._resolved.get(ref)
        if commit_id is None:
            try:
                commit_id = self.repo.resolve(unquote(ref))
            except NotFoundError as e:
                raise FileNotFoundError(f"dv://{ref}: {e}") from e
            with self._lock:
                commit_id = self._resolved.setdefault(ref, commit_id)
        return commit_id

    def view(self, ref: str) -> SnapshotView:
        """The snapshot `ref` names (cached by commit id)."""
        commit_id = self.resolve(ref)
        with self._lock:
            v = self._views.get(commit_id)
            if v is not None:
                self._views.move_to_end(commit_id)
                return v
        v = SnapshotView(self.repo, commit_id, cache_bytes=self.cache_bytes)
        with self._lock:
            v = self._views.setdefault(commit_id, v)
            while len(self._views) > 4:
                self._views.popitem(last=False)
        return v

    def _split(self, path: str) -> tuple[str, str]:
        path = self._strip_protocol(path)
        ref, _, rest = path.partition("/")
        return ref, rest

    def _tree(self, ref: str) -> dict[str, set[str]]:
        """Directory -> children of the `files/` tree of a commit."""
        v = self.view(ref)
        with self._lock:
            tree = self._dirs.get(v.commit_id)
        if tree is None:
            tree = {"": set()}
            for rel in v.files():
                parent = ""
                for part in rel.split("/"):
                    child = f"{parent}/{part}" if parent else part
                    tree.setdefault(parent, set()).add(child)
                    parent = child
            with self._lock:
                self._dirs[v.commit_id] = tree
        return tree

    # ------------------------------------------------------------------ listing
    def _dir_entry(self, name: str) -> dict[str, Any]:
        return {"name": name, "size": 0, "type": "directory"}

    def _file_entry(self, name: str, size: int, **extra: Any) -> dict[str, Any]:
        # ETag: what caches key on (Hugging Face datasets, fsspec) changes with the commit
        return {"name": name, "size": size, "type": "file", "ETag": self.ukey(name), **extra}

    def info(self, path, **kwargs):
        ref, rest = self._split(path)
        if not ref:
            return self._dir_entry("")
        v = self.view(ref)
        if not rest:
            return self._dir_entry(ref)
        if rest in v.by_name:
            i = v.by_name[rest]
            part = v.parts[i]
            size = part.known_size if part.known_size is not None else len(v.part_bytes(i))
            return self._file_entry(f"{ref}/{rest}", size, commit=v.commit_id, rows=part.rows, shard=part.group.shard)
        if rest == FILES_DIR:
            return self._dir_entry(f"{ref}/{FILES_DIR}")
        if rest.startswith(FILES_DIR + "/"):
            rel = rest[len(FILES_DIR) + 1 :]
            if rel in v.files():
                return self._file_entry(f"{ref}/{rest}", len(v.file_bytes(rel)), commit=v.commit_id)
            if rel in self._tree(ref):
                return self._dir_entry(f"{ref}/{rest}")
        raise FileNotFoundError(f"dv://{ref}/{rest}: no such file in commit {v.commit_id}")

    def ls(self, path, detail=True, **kwargs):
        ref, rest = self._split(path)
        if not ref:
            names = [n for n in (*self.repo.branches(), *self.repo.tags())]
            entries = [self._dir_entry(_ref_name(n)) for n in names]
        else:
            v = self.view(ref)
            if not rest:
                entries = [
                    self._file_entry(f"{ref}/{p.name}", p.known_size if p.known_size is not None else len(v.part_bytes(i)),
                                     commit=v.commit_id, rows=p.rows, shard=p.group.shard)
                    for i, p in enumerate(v.parts)
                ]
            elif rest == FILES_DIR or rest.startswith(FILES_DIR + "/"):
                rel = rest[len(FILES_DIR) + 1 :] if rest != FILES_DIR else ""
                tree = self._tree(ref)
                if rel not in tree:
                    return [self.info(path)] if detail else [self._strip_protocol(path)]
                entries = []
                for child in sorted(tree[rel]):
                    name = f"{ref}/{FILES_DIR}/{child}"
                    if child in tree:
                        entries.append(self._dir_entry(name))
                    else:
                        entries.append(self._file_entry(name, len(v.file_bytes(child)), commit=v.commit_id))
            else:
                return [self.info(path)] if detail else [self._strip_protocol(path)]
        return entries if detail else [e["name"] for e in entries]

    # ------------------------------------------------------------------ reading
    def _served_bytes(self, path: str) -> bytes | memoryview:
        ref, rest = self._split(path)
        if not ref or not rest:
            raise IsADirectoryError(f"dv://{ref}/{rest}")
        v = self.view(ref)
        if rest in v.by_name:
            return v.part_bytes(v.by_name[rest])
        if rest.startswith(FILES_DIR + "/"):
            rel = rest[len(FILES_DIR) + 1 :]
            if rel in v.files():
                return v.file_bytes(rel)
            if rel in self._tree(ref):
                raise IsADirectoryError(f"dv://{ref}/{rest}")
        raise FileNotFoundError(f"dv://{ref}/{rest}: no such file in commit {v.commit_id}")

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        if "r" not in mode or any(c in mode for c in "wax+"):
            raise PermissionError(f"dv:// is read-only (mode {mode!r})")
        return _ServedFile(self._served_bytes(path), self._strip_protocol(path))

    def cat_file(self, path, start=None, end=None, **kwargs):
        data = self._served_bytes(path)
        return bytes(data[start:end] if (start is not None or end is not None) else data)

    def ukey(self, path):
        """Changes only with the bytes: commit id + path (shard names carry their ids)."""
        ref, rest = self._split(path)
        return object_id(f"{self.resolve(ref) if ref else ''}/{rest}".encode())

    def created(self, path):
        ref, _ = self._split(path)
        from datetime import datetime

        return datetime.fromisoformat(self.repo.read_commit(self.resolve(ref)).time.replace("Z", "+00:00"))

    modified = created

    # ------------------------------------------------------------------ read-only
    def _read_only(self, *args: Any, **kwargs: Any):
        raise PermissionError("dv:// is read-only: commit with `dataversion add` or `ingest`")

    mkdir = makedirs = rmdir = rm_file = _rm = cp_file = mv = put_file = pipe_file = touch = _read_only


def _rebuild(cls, args, kwargs):
    return cls(*args, **kwargs)


def _ref_name(full: str) -> str:
    for prefix in ("refs/heads/", "refs/tags/"):
        if full.startswith(prefix):
            full = full[len(prefix) :]
    return full.replace("/", "%2F")


fsspec.register_implementation(PROTOCOL, DataversionFileSystem, clobber=True)
