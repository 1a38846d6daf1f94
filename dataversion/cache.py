"""The read tier: where the loader gets shard bytes from.

Shards are immutable and named by the hash of their bytes, so a cached copy never needs
invalidation: the only questions are room (LRU eviction) and integrity (the bytes must hash
to the shard id; a corrupt copy is re-fetched once, then CorruptObjectError names the shard).

Tiers (all picklable: DataLoader workers receive them and open their own connections):
- `StoreRead`: no cache. For file:// stores the shard file is read in place.
- `LocalDiskCache` (the default): a directory of shards named by id, plus their decoded
  Arrow IPC copies (memory-mapped by every worker: decoded once per machine, not once per
  worker and epoch). Shards of file:// stores are read in place, only decoded copies are
  written. Size-bounded with LRU eviction
  (last use = file mtime). Safe across processes: downloads go to a temp file renamed into
  place, one fetch per shard at a time (flock per shard), eviction under a directory lock.
  Hit/miss/eviction counters live in `stats.json` beside the shards.
- `AlluxioCache`: reads through Alluxio workers (`alluxiofs`). When they cannot be reached,
  it warns once and reads from the object store instead.

`open_tier(spec)` builds a tier from "auto" (= "local", or DATAVERSION_CACHE) | "local" |
"none" | "alluxio" | a tier.
`warm(repo, ref, tier)` and `status(tier)` are what `dataversion cache` prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from .errors import BadInputError, CorruptObjectError, NotFoundError
from .hashing import object_id
from .shards import decode_shard, shard_key

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 20 * 1024**3
_STAT_FIELDS = ("hits", "misses", "evictions", "bytes_fetched", "bytes_evicted", "corrupt_refetches")


def default_cache_dir() -> str:
    """DATAVERSION_CACHE_DIR, else $XDG_CACHE_HOME/dataversion/shards (~/.cache/...)."""
    env = os.environ.get("DATAVERSION_CACHE_DIR")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "dataversion", "shards")


def _fetch_verified(store: Any, shard_id: str, fetch=None) -> bytes:
    """The shard's bytes from `fetch` (default: the store), re-fetched once if they are corrupt."""
    fetch = fetch or (lambda: store.get(shard_key(shard_id)))
    for attempt in (1, 2):
        try:
            data = fetch()
        except NotFoundError:
            raise NotFoundError(f"shard {shard_id} is missing from {store.url}", hint="run `dataversion verify`") from None
        if object_id(data) == shard_id:
            return data
        log.warning("shard %s from %s is corrupt (attempt %d)", shard_id, store.url, attempt)
    raise CorruptObjectError(
        f"shard {shard_id} is corrupt in {store.url}: its bytes do not hash to its id (fetched twice)",
        hint="run `dataversion verify`",
    )


class ReadTier:
    """Interface: `read(store, shard_id) -> pa.Buffer` of verified shard bytes."""

    name = "none"

    def read(self, store: Any, shard_id: str) -> pa.Buffer:
        raise NotImplementedError

    def ensure(self, store: Any, shard_id: str) -> bool:
        """Make the shard local/cached without reading it; True if it had to be fetched."""
        return False

    def read_table(self, store: Any, shard_id: str) -> pa.Table:
        """The shard decoded (all rows, all columns, one chunk per column)."""
        return decode_shard(self.read(store, shard_id), shard_id).combine_chunks()

    def status(self) -> dict[str, Any]:
        return {"tier": self.name}


class StoreRead(ReadTier):
    """No cache: read from the store (in place for file:// stores, verified once per process)."""

    name = "none"

    def __init__(self) -> None:
        self._verified: set[str] = set()

    def __getstate__(self) -> dict:
        return {"_verified": set()}

    def read(self, store: Any, shard_id: str) -> pa.Buffer:
        path = store.local_path(shard_key(shard_id))
        if path is None:
            return pa.py_buffer(_fetch_verified(store, shard_id))
        try:
            buf = pa.memory_map(path).read_buffer()
        except FileNotFoundError:
            raise NotFoundError(f"shard {shard_id} is missing from {store.url}", hint="run `dataversion verify`") from None
        if shard_id not in self._verified:
            if object_id(memoryview(buf)) != shard_id:
                # a local file cannot be re-fetched: it is the source of truth
                raise CorruptObjectError(f"shard {shard_id} is corrupt in {store.url}: its bytes do not hash to its id", hint="run `dataversion verify`")
            self._verified.add(shard_id)
        return buf


class LocalDiskCache(ReadTier):
    """A size-bounded, content-addressed shard cache on local disk, shared by processes."""

    name = "local"

    def __init__(self, root: str | None = None, max_bytes: int | None = None):
        self.root = os.path.abspath(root or default_cache_dir())
        env_max = os.environ.get("DATAVERSION_CACHE_MAX_BYTES")
        self.max_bytes = int(max_bytes if max_bytes is not None else (env_max or DEFAULT_MAX_BYTES))
        self._verified: set[str] = set()
        self._verified_sidecars: set[str] = set()
        self._in_place = StoreRead()
        os.makedirs(os.path.join(self.root, "locks"), exist_ok=True)

    def __getstate__(self) -> dict:
        return {"root": self.root, "max_bytes": self.max_bytes, "_verified": set(), "_verified_sidecars": set(), "_in_place": StoreRead()}

    def __repr__(self) -> str:
        return f"LocalDiskCache({self.root!r}, max_bytes={self.max_bytes})"

    # -- paths and locks -----------------------------------------------------------------
    def path(self, shard_id: str) -> str:
        return os.path.join(self.root, shard_id[:2], shard_id + ".parquet")

    @contextlib.contextmanager
    def _lock(self, name: str):
        with open(os.path.join(self.root, "locks", name + ".lock"), "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _bump(self, **deltas: int) -> None:
        """Add to the persisted counters (read-modify-write under the directory lock)."""
        with self._lock("_stats"):
            stats = self._read_stats()
            for k, v in deltas.items():
                stats[k] = stats.get(k, 0) + v
            tmp = os.path.join(self.root, f".stats-{os.getpid()}.tmp")
            with open(tmp, "w") as f:
                json.dump(stats, f)
            os.replace(tmp, os.path.join(self.root, "stats.json"))

    def _read_stats(self) -> dict[str, int]:
        try:
            with open(os.path.join(self.root, "stats.json")) as f:
                stats = json.load(f)
        except (FileNotFoundError, ValueError):
            stats = {}
        return {k: int(stats.get(k, 0)) for k in _STAT_FIELDS}

    # -- reading -------------------------------------------------------------------------
    def contains(self, shard_id: str) -> bool:
        return os.path.isfile(self.path(shard_id))

    def _open_cached(self, shard_id: str) -> pa.Buffer | None:
        """The cached copy (verified once per process), or None if absent or corrupt."""
        p = self.path(shard_id)
        try:
            buf = pa.memory_map(p).read_buffer()  # the mapping survives a concurrent eviction
            os.utime(p)  # last use, for LRU
        except FileNotFoundError:
            return None
        if shard_id not in self._verified:
            if object_id(memoryview(buf)) != shard_id:
                log.warning("cached shard %s is corrupt; fetching it again", shard_id)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)
                self._bump(corrupt_refetches=1)
                return None
            self._verified.add(shard_id)
        return buf

    def read(self, store: Any, shard_id: str, *, fetch=None) -> pa.Buffer:
        if fetch is None and store.local_path(shard_key(shard_id)) is not None:
            return self._in_place.read(store, shard_id)  # already on a local disk: no copy
        buf = self._open_cached(shard_id)
        if buf is not None:
            self._bump(hits=1)
            return buf
        self._fill(store, shard_id, fetch)
        buf = self._open_cached(shard_id)
        if buf is None:  # evicted between fill and open (cache far too small): read directly
            return pa.py_buffer(_fetch_verified(store, shard_id, fetch))
        return buf

    def ensure(self, store: Any, shard_id: str, *, fetch=None) -> bool:
        if fetch is None and store.local_path(shard_key(shard_id)) is not None:
            return False
        if self.contains(shard_id):
            return False
        return self._fill(store, shard_id, fetch)

    # -- decoded sidecars ----------------------------------------------------------------
    # Decoding Parquet costs more than everything else a worker does per epoch, and every
    # worker needs every shard. So the first reader writes the decoded shard as an
    # uncompressed Arrow IPC file beside it ("<id>.arrow", with its xxh3 in "<id>.arrow.sum");
    # later readers memory-map it: no decode, no copy, pages shared by all processes.
    def _sidecar(self, shard_id: str) -> str:
        return os.path.join(self.root, shard_id[:2], shard_id + ".arrow")

    def _open_sidecar(self, shard_id: str) -> pa.Table | None:
        path = self._sidecar(shard_id)
        try:
            buf = pa.memory_map(path).read_buffer()
            with open(path + ".sum") as f:
                expected = f.read().strip()
            os.utime(path)
        except FileNotFoundError:
            return None
        if shard_id not in self._verified_sidecars:
            if object_id(memoryview(buf)) != expected:
                log.warning("decoded copy of shard %s is corrupt; decoding it again", shard_id)
                for p in (path, path + ".sum"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(p)
                return None
            self._verified_sidecars.add(shard_id)
        return pa.ipc.open_file(buf).read_all()

    def read_table(self, store: Any, shard_id: str) -> pa.Table:
        table = self._open_sidecar(shard_id)
        if table is not None:
            return table
        with self._lock(shard_id + ".arrow"):
            table = self._open_sidecar(shard_id)
            if table is not None:
                return table
            decoded = decode_shard(self.read(store, shard_id), shard_id).combine_chunks()
            path = self._sidecar(shard_id)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_file(sink, decoded.schema) as w:
                w.write_table(decoded)
            data = sink.getvalue()
            for dest, payload in ((path + ".sum", object_id(memoryview(data)).encode()), (path, data)):
                fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
                with os.fdopen(fd, "wb") as f:
                    f.write(payload)
                os.replace(tmp, dest)
        self.evict(keep=shard_id)
        table = self._open_sidecar(shard_id)
        return table if table is not None else decoded

    def _fill(self, store: Any, shard_id: str, fetch=None) -> bool:
        """Download a shard into the cache; one process per shard at a time."""
        with self._lock(shard_id):
            if self.contains(shard_id):  # another process fetched it while we waited
                self._bump(hits=1)
                return False
            data = _fetch_verified(store, shard_id, fetch)
            dest = self.path(shard_id)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(dest))
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, dest)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            self._verified.add(shard_id)
        self._bump(misses=1, bytes_fetched=len(data))
        self.evict(keep=shard_id)
        return True

    # -- eviction and status -------------------------------------------------------------
    def _entries(self) -> list[tuple[float, int, str, str]]:
        out = []
        for sub in os.scandir(self.root):
            if not sub.is_dir() or sub.name == "locks":
                continue
            for e in os.scandir(sub.path):
                if e.name.endswith((".parquet", ".arrow")) and not e.name.startswith("."):
                    try:
                        st = e.stat()
                    except FileNotFoundError:
                        continue
                    out.append((st.st_mtime, st.st_size, e.name.rsplit(".", 1)[0], e.path))
        return out

    def evict(self, keep: str | None = None) -> int:
        """Remove least recently used shards until the cache fits in max_bytes."""
        with self._lock("_evict"):
            entries = self._entries()
            total = sum(e[1] for e in entries)
            if total <= self.max_bytes:
                return 0
            evicted = freed = 0
            for _mtime, size, sid, path in sorted(entries):
                if total <= self.max_bytes:
                    break
                if sid == keep:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    evicted += 1
                    freed += size
                    total -= size
                for extra in (path + ".sum", os.path.join(self.root, "locks", sid + ".lock"),
                              os.path.join(self.root, "locks", sid + ".arrow.lock")):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(extra)
        if evicted:
            self._bump(evictions=evicted, bytes_evicted=freed)
        return evicted

    def status(self) -> dict[str, Any]:
        entries = self._entries()
        stats = self._read_stats()
        lookups = stats["hits"] + stats["misses"]
        return {
            "tier": self.name,
            "root": self.root,
            "shards": sum(1 for e in entries if e[3].endswith(".parquet")),
            "decoded": sum(1 for e in entries if e[3].endswith(".arrow")),
            "bytes": sum(e[1] for e in entries),
            "max_bytes": self.max_bytes,
            **stats,
            "hit_rate": round(stats["hits"] / lookups, 4) if lookups else None,
        }


class AlluxioCache(ReadTier):
    """Shard reads through Alluxio workers (alluxiofs), for s3:// repositories.

    Workers come from `worker_hosts` ("h1,h2"), else DATAVERSION_ALLUXIO_WORKERS; or etcd
    from `etcd_hosts` / DATAVERSION_ALLUXIO_ETCD. If no worker answers a TCP connect within
    `connect_timeout` seconds (or a read through Alluxio fails), one warning is issued and
    every later read goes straight to the object store: training continues, a little slower.
    """

    name = "alluxio"

    def __init__(
        self,
        worker_hosts: str | None = None,
        *,
        worker_http_port: int | None = None,
        etcd_hosts: str | None = None,
        connect_timeout: float = 1.0,
        local: LocalDiskCache | None = None,
    ):
        self.worker_hosts = worker_hosts or os.environ.get("DATAVERSION_ALLUXIO_WORKERS") or ""
        self.etcd_hosts = etcd_hosts or os.environ.get("DATAVERSION_ALLUXIO_ETCD") or ""
        self.worker_http_port = int(worker_http_port or os.environ.get("DATAVERSION_ALLUXIO_HTTP_PORT") or 28080)
        if not self.worker_hosts and not self.etcd_hosts:
            raise BadInputError(
                "the Alluxio tier needs worker hosts or etcd hosts",
                hint="set DATAVERSION_ALLUXIO_WORKERS=host1,host2 or DATAVERSION_ALLUXIO_ETCD=host:2379",
            )
        self.connect_timeout = connect_timeout
        self.local = local
        self._fs = None
        self._fallback: bool | None = None  # None: not probed yet
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d["_fs"] = None
        d["_lock"] = None
        return d

    def __setstate__(self, d: dict) -> None:
        self.__dict__.update(d)
        self._lock = threading.Lock()

    def _endpoints(self) -> list[tuple[str, int]]:
        if self.worker_hosts:
            out = []
            for h in self.worker_hosts.split(","):
                host, _, port = h.strip().partition(":")
                out.append((host, int(port) if port else self.worker_http_port))
            return out
        out = []
        for h in self.etcd_hosts.split(","):
            host, _, port = h.strip().partition(":")
            out.append((host, int(port) if port else 2379))
        return out

    def reachable(self) -> bool:
        """Whether any worker (or etcd host) accepts a TCP connection within the timeout."""
        for host, port in self._endpoints():
            try:
                with socket.create_connection((host, port), timeout=self.connect_timeout):
                    return True
            except OSError:
                continue
        return False

    def _fall_back(self, why: str) -> None:
        self._fallback = True
        warnings.warn(f"Alluxio is unreachable ({why}); reading shards from the object store instead", RuntimeWarning, stacklevel=3)

    def probe(self) -> bool:
        """Check once; on failure warn (once) and switch to the object store. True if live."""
        if self._fallback is None:
            if self.reachable():
                self._fallback = False
            else:
                self._fall_back(f"no answer from {self.worker_hosts or self.etcd_hosts} within {self.connect_timeout:g} s")
        return not self._fallback

    def _filesystem(self, store: Any):
        if self._fs is None:
            from alluxiofs import AlluxioFileSystem

            target_options = {}
            endpoint = getattr(store, "endpoint", None)
            if endpoint:
                target_options = {
                    "client_kwargs": {"endpoint_url": endpoint},
                    "key": os.environ.get("AWS_ACCESS_KEY_ID"),
                    "secret": os.environ.get("AWS_SECRET_ACCESS_KEY"),
                }
            kwargs: dict[str, Any] = {"target_protocol": "s3", "target_options": target_options}
            if self.worker_hosts:
                kwargs["worker_hosts"] = self.worker_hosts
                kwargs["worker_http_port"] = self.worker_http_port
            else:
                kwargs["etcd_hosts"] = self.etcd_hosts
            self._fs = AlluxioFileSystem(**kwargs)
        return self._fs

    def _alluxio_fetch(self, store: Any, shard_id: str):
        bucket = getattr(store, "bucket", None)
        if bucket is None:
            return None  # not an s3:// store: nothing Alluxio can mount
        path = f"s3://{bucket}/{getattr(store, 'prefix', '')}{shard_key(shard_id)}"

        def fetch() -> bytes:
            return self._filesystem(store).cat_file(path)

        return fetch

    def read(self, store: Any, shard_id: str) -> pa.Buffer:
        fetch = self._alluxio_fetch(store, shard_id) if self.probe() else None
        if fetch is not None:
            try:
                return pa.py_buffer(_fetch_verified(store, shard_id, fetch))
            except CorruptObjectError:
                raise
            except Exception as e:  # noqa: BLE001 - any Alluxio failure means: use the store
                with self._lock:
                    if not self._fallback:
                        self._fall_back(f"{type(e).__name__}: {e}")
        if self.local is not None:
            return self.local.read(store, shard_id)
        return pa.py_buffer(_fetch_verified(store, shard_id))

    def ensure(self, store: Any, shard_id: str) -> bool:
        self.read(store, shard_id)
        return True

    def status(self) -> dict[str, Any]:
        return {
            "tier": self.name,
            "worker_hosts": self.worker_hosts or None,
            "etcd_hosts": self.etcd_hosts or None,
            "reachable": self.reachable(),
        }


def open_tier(spec: str | ReadTier | None = "auto", store: Any = None) -> ReadTier:
    """A read tier from a spec: "auto" (local disk cache for remote stores, in-place reads
    for file://), "local", "none", "alluxio", or a ReadTier instance (returned as is).
    DATAVERSION_CACHE overrides "auto"."""
    if isinstance(spec, ReadTier):
        return spec
    spec = spec or "auto"
    if spec == "auto":
        spec = os.environ.get("DATAVERSION_CACHE", "auto")
    if spec == "auto":
        spec = "local"
    if spec == "none":
        return StoreRead()
    if spec == "local":
        return LocalDiskCache()
    if spec == "alluxio":
        return AlluxioCache()
    raise BadInputError(f"unknown cache tier {spec!r}", hint="use auto, local, none or alluxio")


class Prefetcher:
    """A background thread that brings the next shards of an order into the tier.

    `advance(i)` says the reader is at index i of `shard_ids`; the thread keeps up to `depth`
    shards ahead fetched. A daemon thread: it dies with its process (no orphans).
    """

    def __init__(self, tier: ReadTier, store: Any, shard_ids: list[str], depth: int = 2):
        self.tier, self.store, self.ids, self.depth = tier, store, list(shard_ids), depth
        self._target = -1
        self._done = 0
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="dataversion-prefetch", daemon=True)
        self._thread.start()

    def advance(self, index: int) -> None:
        with self._cv:
            self._target = max(self._target, min(len(self.ids) - 1, index + self.depth))
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and self._done > self._target:
                    self._cv.wait()
                if self._stopped:
                    return
                i = self._done
                self._done += 1
            try:
                self.tier.ensure(self.store, self.ids[i])
            except Exception as e:  # noqa: BLE001 - the reader will hit (and report) it itself
                log.debug("prefetch of %s failed: %s", self.ids[i], e)


def warm(repo: Any, ref: str, tier: ReadTier | str | None = "local") -> dict[str, Any]:
    """Preload every shard of a snapshot into a tier. Returns counts and timing."""
    tier = open_tier(tier, repo.store)
    commit_id = repo.resolve(ref)
    shards = repo.read_manifest(commit_id).shards
    t0 = time.perf_counter()
    fetched = 0
    nbytes = 0
    for s in _unique(shards):
        if tier.ensure(repo.store, s.id):
            fetched += 1
            nbytes += s.size
    return {
        "commit": commit_id,
        "tier": tier.name,
        "shards": len({s.id for s in shards}),
        "fetched": fetched,
        "already_cached": len({s.id for s in shards}) - fetched,
        "bytes_fetched": nbytes,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _unique(shards: Iterable[Any]) -> list[Any]:
    seen: set[str] = set()
    out = []
    for s in shards:
        if s.id not in seen:
            seen.add(s.id)
            out.append(s)
    return out


def status(tier: ReadTier | str | None = "local") -> dict[str, Any]:
    """Size, hit rate and evictions of a tier (what `dataversion cache status` prints)."""
    return open_tier(tier).status()
