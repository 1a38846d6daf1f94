"""The storage interface every backend implements, and the one place CAS semantics live.

A store maps string keys ("commits/ab12...json") to immutable-or-CAS-updated bytes.
Compare-and-swap is `put_if_absent` (create only), `put_if_match` (replace only when the
current version token is the one the caller read) and `delete_if_match` (delete only then).
Every ref, lease and pin update goes through these methods. On a remote store they are
idempotent under retries: a lost reply never turns a write that landed into a conflict.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float  # seconds since the epoch
    etag: str | None = None  # the backend's version tag where it has one (S3); None on file://


class Store(ABC):
    """Abstract object store. Implementations: LocalStore (file://), S3Store (s3://), MemoryStore."""

    url: str

    def __init__(self) -> None:
        # Requests sent to the backend, by verb: lets tests and `cache status` prove a warm
        # cache sends no GETs.
        self.stats: Counter[str] = Counter()

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes. Raises NotFoundError if it does not exist."""

    @abstractmethod
    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and an opaque version token for `put_if_match`."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write (or overwrite) the object whole; readers never see a partial object."""

    def put_transient(self, key: str, data: bytes) -> None:
        """`put` of an object whose loss in a power cut harms nothing (the marker of a live
        process: once the machine is down, the process is gone too). Whole and visible to
        every reader when this returns; a store may skip making it durable."""
        self.put(key, data)

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create the object only if no object has that key. Returns False if one existed."""

    @abstractmethod
    def put_if_match(self, key: str, data: bytes, token: str) -> None:
        """Replace the object only if its version is still `token`; else ConflictError."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete the object; deleting a missing object is not an error."""

    @abstractmethod
    def delete_if_match(self, key: str, token: str) -> None:
        """Delete the object only if its version is still `token`; else ConflictError (also
        when it is already gone: someone else deleted it)."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, in no particular order."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object with this key exists."""

    @abstractmethod
    def touch(self, key: str) -> None:
        """Refresh the object's modification time (git's "freshen"): a writer that reuses an
        object already stored calls this, so a concurrent `gc` sees it as young and keeps it."""

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        """Write many immutable, content-addressed objects (tree nodes); durable when it
        returns. Default: `put` each, 8 at a time (remote stores are latency-bound)."""
        if len(items) <= 1:
            for key, data in items:
                self.put(key, data)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda kv: self.put(*kv), items))

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """`length` bytes of the object from `offset` (fewer at its end). NotFoundError if it
        does not exist. Default: read it whole."""
        return self.get(key)[offset : offset + length]

    def local_path(self, key: str) -> str | None:
        """A filesystem path holding the object, for zero-copy reads; None if remote."""
        return None

    def open_input(self, key: str):
        """A seekable binary file over the object, for readers that need only parts of it
        (Parquet footers and single columns). Default: the whole object in memory."""
        import io

        return io.BytesIO(self.get(key))

    def put_file(self, key: str, path: str) -> None:
        """Upload a local file whole (default: read it and `put`)."""
        with open(path, "rb") as f:
            self.put(key, f.read())

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
