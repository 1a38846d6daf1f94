"""The local-disk shard cache (the default read tier), shared by every process of a machine.

A directory of shards named by id, plus their decoded Arrow IPC copies (memory-mapped by
every worker: decoded once per machine, not once per worker and epoch). Shards of file://
stores are read in place, only decoded copies are written. Size-bounded with LRU eviction
(last use = file mtime; a decoded copy's: its checksum file's). Safe across processes:
files are written whole and renamed into place (`stores.atomic`), one fetch per shard at a
time (a `FileLock` per shard), eviction under a directory lock. Hit/miss/eviction counters
live in `stats.json` beside the shards.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from ..errors import CorruptObjectError
from ..hashing import object_id
from ..shards import decode_shard, shard_key
from ..stores.atomic import TMP_PREFIX, move_atomic, write_atomic
from .base import ReadTier, StoreRead, fetch_verified

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 20 * 1024**3
_STAT_FIELDS = ("hits", "misses", "evictions", "bytes_fetched", "bytes_evicted", "corrupt_refetches")
# FileLock polls a non-blocking flock; the sections it guards last microseconds to one
# download, so a short poll keeps a waiting worker from sleeping past the holder's release.
_LOCK_POLL_S = 0.005


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:  # not Linux: a vouch lasts for this process's parent tree only
        return f"pid-{os.getppid()}-{os.getpid()}"


_BOOT_ID = _boot_id()


def _identity(st: os.stat_result) -> str:
    """What changes when a file's bytes may have: device, inode, size, mtime, ctime (ns)."""
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def default_cache_dir() -> str:
    """DATAVERSION_CACHE_DIR, else $XDG_CACHE_HOME/dataversion/shards (~/.cache/...)."""
    env = os.environ.get("DATAVERSION_CACHE_DIR")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "dataversion", "shards")


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

    def _lock(self, name: str) -> FileLock:
        """An exclusive lock shared by every process (and thread: one instance per use)."""
        return FileLock(os.path.join(self.root, "locks", name + ".lock"), poll_interval=_LOCK_POLL_S)

    @contextlib.contextmanager
    def _held(self, name: str, wait: bool):
        """The lock `name` held for the block (True), or, with `wait=False` while another
        process or thread holds it, nothing held (False)."""
        lock = self._lock(name)
        try:
            lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def _bump(self, **deltas: int) -> None:
        """Add to the persisted counters (read-modify-write under the directory lock)."""
        with self._lock("_stats"):
            stats = self._read_stats()
            for k, v in deltas.items():
                stats[k] = stats.get(k, 0) + v
            # counters, not data: a power cut may lose the last few, so no fsync per read
            write_atomic(os.path.join(self.root, "stats.json"), json.dumps(stats).encode(), fsync=False)

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
            return pa.py_buffer(fetch_verified(store, shard_id, fetch))
        return buf

    def ensure(self, store: Any, shard_id: str, *, fetch=None, wait: bool = True) -> bool | None:
        """Fetch the shard into the cache unless it is there (or read in place); True when
        fetched. With `wait=False`, None while another process is fetching it."""
        if fetch is None and store.local_path(shard_key(shard_id)) is not None:
            return False
        if self.contains(shard_id):
            return False
        return self._fill(store, shard_id, fetch, wait)

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
            before = _identity(os.stat(path))
            buf = pa.memory_map(path).read_buffer()
            with open(path + ".sum") as f:
                expected = f.read().strip()
            now = _identity(os.stat(path))
            os.utime(path + ".sum")  # last use, for eviction (the sidecar's own times vouch)
        except FileNotFoundError:
            return None
        if shard_id not in self._verified_sidecars:
            same = now == before  # the file mapped is the one stat saw (not replaced between)
            if not (same and self._vouched(path, now, expected)):
                if object_id(memoryview(buf)) != expected:
                    log.warning("decoded copy of shard %s is corrupt; decoding it again", shard_id)
                    for p in (path, path + ".sum", path + ".ok"):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(p)
                    return None
                if same:
                    self._vouch(path, now, expected)
            self._verified_sidecars.add(shard_id)
        return pa.ipc.open_file(buf).read_all()

    # A decoded copy hashed by one process is vouched for to the others until the file
    # changes: "<id>.arrow.ok" names the boot, the file's identity (device, inode, size,
    # mtime and ctime in ns) and the checksum it matched. Every worker of a loader takes
    # rows of every block (round-robin batches), so without it each one read and hashed
    # every decoded shard of the epoch, and read it from disk again when the page cache had
    # dropped it. Any write to the file, or its replacement, changes its ctime (which no
    # tool can set back) or its inode, and a reboot changes the boot id: then the copy is
    # hashed again before use.
    def _vouched(self, path: str, identity: str, expected: str) -> bool:
        try:
            with open(path + ".ok") as f:
                return f.read() == f"{_BOOT_ID} {identity} {expected}"
        except OSError:
            return False

    def _vouch(self, path: str, identity: str, expected: str) -> None:
        with contextlib.suppress(OSError):  # a vouch is an optimization: never a failure
            write_atomic(path + ".ok", f"{_BOOT_ID} {identity} {expected}".encode(), fsync=False)

    def read_table(self, store: Any, shard_id: str) -> pa.Table:
        table = self._open_sidecar(shard_id)
        if table is None:
            self._build_sidecar(store, shard_id)
            table = self._open_sidecar(shard_id)
        if table is None:  # evicted between build and open (cache far too small): decode here
            table = decode_shard(self.read(store, shard_id), shard_id).combine_chunks()
        return table

    def decoded(self, store: Any, shard_id: str) -> pa.Table | None:
        return self.read_table(store, shard_id)

    def prepare(self, store: Any, shard_id: str, *, wait: bool = True) -> bool:
        if self.ensure(store, shard_id, wait=wait) is None:
            return False  # another process is fetching it
        if not os.path.isfile(self._sidecar(shard_id) + ".sum"):
            return self._build_sidecar(store, shard_id, wait=wait)
        return True

    def _build_sidecar(self, store: Any, shard_id: str, *, wait: bool = True) -> bool:
        """Decode the shard's verified bytes into its Arrow sidecar, once per machine.

        One record batch (a chunked table would make every batch's `take` ~15x slower),
        written straight to a temporary file and renamed into place: the process holds the
        decoded shard once, never a second serialized copy. Decoding is single-threaded:
        Arrow's per-thread heaps kept ~50 MB per read in each worker. With `wait=False`,
        False (nothing done) when another process is building it now."""
        path = self._sidecar(shard_id)
        with self._held(shard_id + ".arrow", wait) as held:
            if not held:
                return False
            if os.path.isfile(path) and os.path.isfile(path + ".sum"):
                return True  # another process built it while we waited
            try:
                pf = pq.ParquetFile(pa.BufferReader(self.read(store, shard_id)))
                decoded = pf.read(use_threads=False).combine_chunks()
            except (pa.ArrowInvalid, OSError) as e:
                if isinstance(e, FileNotFoundError):
                    raise
                raise CorruptObjectError(f"shard {shard_id} is not a readable Parquet file: {e}") from e
            directory = os.path.dirname(path)
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{shard_id}.arrow-", dir=directory)
            os.close(fd)
            try:
                with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, decoded.schema) as w:
                    w.write_table(decoded, max_chunksize=max(1, decoded.num_rows))
                del decoded
                pa.default_memory_pool().release_unused()  # the decode's freed pages, back to the OS
                with pa.memory_map(tmp) as written:
                    digest = object_id(memoryview(written.read_buffer()))
                # No fsync: every copy is verified against its checksum before use, so one a
                # power cut damaged is decoded again, never served.
                write_atomic(path + ".sum", digest.encode(), fsync=False)
                move_atomic(tmp, path, fsync=False)
                self._vouch(path, _identity(os.stat(path)), digest)  # hashed just now
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        self.evict(keep=shard_id)
        return True

    # -- blobs -----------------------------------------------------------------------------
    # Small objects beside the shards (the loader's tree-node bundles, `training.nodes`),
    # evicted with them; their users check what they hold, so they carry no checksum.
    def _blob(self, name: str) -> str:
        return os.path.join(self.root, name[:2], name)

    def get_blob(self, name: str) -> bytes | None:
        path = self._blob(name)
        try:
            with open(path, "rb") as f:
                data = f.read()
            os.utime(path)
        except FileNotFoundError:
            return None
        return data

    def put_blob(self, name: str, data: bytes) -> None:
        write_atomic(self._blob(name), data, fsync=False)  # no fsync: checked by its users

    def _fill(self, store: Any, shard_id: str, fetch=None, wait: bool = True) -> bool | None:
        """Download a shard into the cache; one process per shard at a time. None (nothing
        done) with `wait=False` while another process downloads it."""
        with self._held(shard_id, wait) as held:
            if not held:
                return None
            if self.contains(shard_id):  # another process fetched it while we waited
                self._bump(hits=1)
                return False
            data = fetch_verified(store, shard_id, fetch)
            # No fsync: a copy is hashed against its id before use (once per process), so a
            # copy a power cut damaged is fetched again, never served.
            write_atomic(self.path(shard_id), data, fsync=False)
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
                if e.name.endswith((".parquet", ".arrow", ".nodes")) and not e.name.startswith("."):
                    try:
                        st = e.stat()
                    except FileNotFoundError:
                        continue
                    used = st.st_mtime
                    if e.name.endswith(".arrow"):  # a decoded copy's last use: its .sum's mtime
                        with contextlib.suppress(FileNotFoundError):
                            used = max(used, os.stat(e.path + ".sum").st_mtime)
                    out.append((used, st.st_size, e.name.rsplit(".", 1)[0], e.path))
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
                for extra in (path + ".sum", path + ".ok", os.path.join(self.root, "locks", sid + ".lock"),
                              os.path.join(self.root, "locks", sid + ".arrow.lock")):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(extra)
        if evicted:
            self._bump(evictions=evicted, bytes_evicted=freed)
        return evicted

    def purge(self, store: Any, shard_ids: set[str]) -> int:
        """Delete the cached shards and decoded copies of `shard_ids` (an erasure replaced
        them: their bytes hold erased payloads). Returns how many shards were cached."""
        n = 0
        with self._lock("_evict"):
            for sid in shard_ids:
                path, side = self.path(sid), self._sidecar(sid)
                found = False
                for p in (path, path + ".sum", side, side + ".sum", side + ".ok"):
                    try:
                        os.unlink(p)
                        found = True
                    except FileNotFoundError:
                        pass
                for lock in (sid + ".lock", sid + ".arrow.lock"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(self.root, "locks", lock))
                n += found
        return n

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
