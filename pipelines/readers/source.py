"""Raw input sources: a local directory or an S3 prefix, listed with a change token.

The token (`etag`) is what incremental ingestion compares: the S3 ETag, or for local files
`<size>-<mtime_ns>`. An S3 source lists and reads through the store layer (`S3Store`). A
`Source` is a small picklable value: its store is created lazily, once per process that
uses it, and is not pickled (Beam ships the Source to its workers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from dataversion.errors import BadInputError, NotFoundError


@dataclass(frozen=True)
class RawObject:
    """One raw object: key relative to the source root, change token, size in bytes."""

    key: str
    etag: str
    size: int


@dataclass(frozen=True)
class Source:
    """Where raw objects live: `file:///dir`, a plain path, or `s3://bucket/prefix`."""

    url: str
    # the S3 store, made on first use; never pickled (one per process)
    _store: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    @property
    def root(self) -> str:
        return urlparse(self.url).path if self.url.startswith("file://") else self.url

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None}

    def _s3(self):
        if self._store is None:
            from dataversion.stores.s3 import S3Store

            u = urlparse(self.url)
            if not u.netloc:
                raise BadInputError(f"source URL {self.url!r} names no bucket")
            object.__setattr__(self, "_store", S3Store(u.netloc, u.path.lstrip("/")))
        return self._store

    def list(self) -> list[RawObject]:
        """Every object under the source, sorted by key. Hidden files/dirs (.name) skipped."""
        if self.is_s3:
            out = [
                RawObject(info.key, info.etag or "", info.size)
                for info in self._s3().list()
                if not any(part.startswith(".") for part in info.key.split("/"))
            ]
            return sorted(out, key=lambda o: o.key)
        root = self.root
        if not os.path.isdir(root):
            raise NotFoundError(f"source directory {root} does not exist")
        out = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):
                    continue
                full = os.path.join(dirpath, name)
                st = os.stat(full)
                key = os.path.relpath(full, root).replace(os.sep, "/")
                out.append(RawObject(key, f"{st.st_size}-{st.st_mtime_ns}", st.st_size))
        return sorted(out, key=lambda o: o.key)

    def read(self, key: str) -> bytes:
        """The object's bytes. Raises NotFoundError, StoreError or OSError."""
        if self.is_s3:
            return self._s3().get(key)
        with open(os.path.join(self.root, key), "rb") as f:
            return f.read()


def open_source(url: str) -> Source:
    """A Source for a local path, file:// URL or s3:// URL."""
    if "://" not in url:
        url = "file://" + os.path.abspath(os.path.expanduser(url))
    if not url.startswith(("file://", "s3://")):
        raise BadInputError(
            f"unsupported source URL {url!r}",
            hint="use a directory, file:///dir or s3://bucket/prefix",
        )
    return Source(url.rstrip("/") if url.startswith("s3://") else url)
