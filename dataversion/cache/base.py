"""The read-tier interface, the one function that verifies fetched shard bytes, and the
tier without a cache (`StoreRead`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from ..errors import CorruptObjectError, NotFoundError
from ..hashing import object_id
from ..shards import decode_shard, shard_key

log = logging.getLogger(__name__)


def fetch_verified(store: Any, shard_id: str, fetch: Callable[[], bytes] | None = None) -> bytes:
    """The shard's bytes from `fetch` (default: the store), re-fetched once if they are corrupt.

    Raises NotFoundError if the store lacks the shard, CorruptObjectError if both fetches
    return bytes that do not hash to its id.
    """
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

    def contains(self, shard_id: str) -> bool | None:
        """Whether the tier holds the shard now; None where it cannot tell."""
        return None

    def prepare(self, store: Any, shard_id: str, *, wait: bool = True) -> bool:
        """Make the shard ready to read (what the prefetcher calls ahead of the reader):
        fetched, and for a tier that keeps decoded copies, decoded. With `wait=False` a
        shard another process is preparing right now is left to it (False): a prefetcher
        moves on to the next shard instead of waiting, so the processes of a machine
        prepare different shards at once. True when the shard is ready."""
        self.ensure(store, shard_id)
        return True

    def decoded(self, store: Any, shard_id: str) -> pa.Table | None:
        """The shard decoded from a copy this tier keeps (memory-mapped, shared by the
        machine's processes, verified), or None when the tier keeps none: read its bytes."""
        return None

    def get_blob(self, name: str) -> bytes | None:
        """A small object this tier keeps beside the shards (`put_blob`), or None. The tier
        does not vouch for it: callers check what it holds (tree nodes against their ids)."""
        return None

    def put_blob(self, name: str, data: bytes) -> None:
        """Keep `data` under `name` (a tier without local storage keeps nothing)."""

    def read_table(self, store: Any, shard_id: str) -> pa.Table:
        """The shard decoded (all rows, all columns, one chunk per column)."""
        return decode_shard(self.read(store, shard_id), shard_id).combine_chunks()

    def status(self) -> dict[str, Any]:
        return {"tier": self.name}

    def purge(self, store: Any, shard_ids: set[str]) -> int:
        """Drop the cached copies of these shards (an erasure replaced them); how many."""
        return 0


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
            return pa.py_buffer(fetch_verified(store, shard_id))
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
