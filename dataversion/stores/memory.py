"""An in-memory store: for tests of the object model and for throwaway repos."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from ..errors import ConflictError, NotFoundError
from ..hashing import object_id
from .base import ObjectInfo, Store


class MemoryStore(Store):
    def __init__(self, name: str = "memory"):
        super().__init__()
        self.url = f"memory://{name}"
        self._objects: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes:
        self.stats["GET"] += 1
        try:
            return self._objects[key][0]
        except KeyError:
            raise NotFoundError(f"object {key} not found in {self.url}") from None

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        self.stats["GET"] += 1
        try:
            data = self._objects[key][0][offset : offset + length]
        except KeyError:
            raise NotFoundError(f"object {key} not found in {self.url}") from None
        self.stats["GET_BYTES"] += len(data)
        return data

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        data = self.get(key)
        return data, object_id(data)

    def put(self, key: str, data: bytes) -> None:
        self.stats["PUT"] += 1
        with self._lock:
            self._objects[key] = (bytes(data), time.time())

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self.stats["PUT"] += 1
        with self._lock:
            if key in self._objects:
                return False
            self._objects[key] = (bytes(data), time.time())
            return True

    def put_if_match(self, key: str, data: bytes, token: str) -> None:
        self.stats["PUT"] += 1
        with self._lock:
            current = self._objects.get(key)
            if current is None or object_id(current[0]) != token:
                raise ConflictError(f"{key} was updated by another writer")
            self._objects[key] = (bytes(data), time.time())

    def touch(self, key: str) -> None:
        with self._lock:
            if key in self._objects:
                self._objects[key] = (self._objects[key][0], time.time())

    def delete(self, key: str) -> None:
        self.stats["DELETE"] += 1
        with self._lock:
            self._objects.pop(key, None)

    def delete_if_match(self, key: str, token: str) -> None:
        self.stats["DELETE"] += 1
        with self._lock:
            current = self._objects.get(key)
            if current is None or object_id(current[0]) != token:
                raise ConflictError(f"{key} was updated or deleted by another writer")
            del self._objects[key]

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self.stats["LIST"] += 1
        with self._lock:
            items = [(k, v) for k, v in self._objects.items() if k.startswith(prefix)]
        for k, (data, mtime) in sorted(items):
            yield ObjectInfo(k, len(data), mtime)

    def exists(self, key: str) -> bool:
        self.stats["HEAD"] += 1
        return key in self._objects
