"""Raw input sources: a local directory or an S3 prefix, listed with a change token.

The token (`etag`) is what incremental ingestion compares: the S3 ETag, or for local files
`<size>-<mtime_ns>`. An S3 source lists and reads through the store layer (`S3Store`). A
`Source` is a small picklable value: its store is created lazily, once per process that
uses it, and is not pickled (Beam ships the Source to its workers).

Listing and reading tell the two kinds of failure apart (issue 17):

- a property of the input is a reject, decided without reading what must not be read:
  hidden names, FIFOs, sockets, devices, symlinks leaving the source or going nowhere
  (`dataversion.scan`, the rules `add` applies too), objects over a size limit;
- a fault of the store or the machine (S3 unreachable after the store's retries, a
  permission error, an object listed a moment ago and gone when read) raises
  `SourceFault`: the run fails, nothing is committed, nothing is consumed, and a rerun
  once the fault is gone reads everything.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from dataversion.errors import BadInputError, DataversionError, NotFoundError, StoreError
from dataversion.scan import (
    HEAD_BYTES,
    HIDDEN_FILE,
    SYMLINK_OUTSIDE_SOURCE,
    TOO_LARGE,
    is_inside,
    read_regular_file,
    too_large_message,
    walk_entries,
)

from ..filters import Drop


class SourceFault(StoreError):
    """A listed object could not be read because of the store or the machine, not its bytes.

    Fails the run: one line naming the source, its endpoint and the key.
    """


@dataclass(frozen=True)
class RawObject:
    """One raw object: key relative to the source root, change token, size in bytes.

    `problem` (reason, message) marks an entry rejected without being read.
    """

    key: str
    etag: str
    size: int
    problem: tuple[str, str] | None = None


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

    @property
    def endpoint(self) -> str:
        """Where the objects are read from: the S3 endpoint, or the local directory."""
        if not self.is_s3:
            return self.root
        if self._store is not None:
            return self._store.endpoint
        from dataversion.stores.s3 import endpoint_from_env

        host, secure = endpoint_from_env()
        return ("https://" if secure else "http://") + host

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None}

    def _s3(self):
        if self._store is None:
            from dataversion.stores.s3 import S3Store

            u = urlparse(self.url)
            if not u.netloc:
                raise BadInputError(f"source URL {self.url!r} names no bucket")
            try:
                store = S3Store(u.netloc, u.path.lstrip("/"))
            except NotFoundError as e:  # the store's hint is for a repository's bucket
                raise NotFoundError(f"source bucket {u.netloc} does not exist ({e.args[0]})",
                                    hint="check the source URL and AWS_ENDPOINT_URL") from None
            object.__setattr__(self, "_store", store)
        return self._store

    def list(self, *, include_hidden: bool = False) -> list[RawObject]:
        """Every object under the source, sorted by key, hostile entries marked `problem`.

        Hidden names (a key part starting with ".") are listed as `hidden_file` rejects
        unless `include_hidden`; local entries follow `dataversion.scan.walk_entries`.
        """
        if self.is_s3:
            out = []
            for info in self._s3().list():
                problem = None
                if not include_hidden and any(p.startswith(".") for p in info.key.split("/")):
                    problem = (
                        HIDDEN_FILE,
                        "hidden object (a key part starts with '.'), not read (include_hidden reads it)",
                    )
                out.append(RawObject(info.key, info.etag or "", info.size, problem))
            return sorted(out, key=lambda o: o.key)
        root = self.root
        if not os.path.isdir(root):
            raise NotFoundError(f"source directory {root} does not exist")
        return [
            RawObject(e.name, e.token, e.size, e.problem)
            for e in walk_entries([root], include_hidden=include_hidden)
        ]

    def read(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes (label sidecars). Raises SourceFault, or BadInputError when the
        object is rejected (not a regular file, too large)."""
        got = self.fetch(key, max_bytes=max_bytes)
        if isinstance(got, Drop):
            raise BadInputError(f"{key}: {got.reason}: {got.message}")
        return got

    def fetch(
        self,
        key: str,
        *,
        size: int | None = None,
        max_bytes: int | None = None,
        check_head: Callable[[bytes, int], Drop | None] | None = None,
    ) -> bytes | Drop:
        """The object's bytes, or a Drop when a property of the object rejects it unread.

        `size` is the listed size (S3: checked against `max_bytes` without a request).
        `check_head(first bytes, size)` may reject on the first bytes before the rest is
        read (S3: one ranged GET, asked for only when given). Raises SourceFault for every
        failure of the store or the machine, after the store's own retries.
        """
        try:
            if not self.is_s3:
                # a symlink inside the source is read through its target, checked again here
                root = os.path.realpath(self.root)
                path = os.path.realpath(os.path.join(root, key))
                if not is_inside(path, root):
                    return Drop(
                        SYMLINK_OUTSIDE_SOURCE,
                        "the path resolves outside the source directory; not read",
                    )
                head = None if check_head is None else _as_pair(check_head)
                got = read_regular_file(path, max_bytes=max_bytes, check_head=head)
                return Drop(*got) if isinstance(got, tuple) else got
            if max_bytes is not None and size is not None and size > max_bytes:
                return Drop(TOO_LARGE, too_large_message(size, max_bytes))
            store = self._s3()
            if check_head is not None and size:
                drop = check_head(store.read_range(key, 0, HEAD_BYTES), size)
                if drop is not None:
                    return drop
            data = store.get(key)
            if max_bytes is not None and len(data) > max_bytes:
                return Drop(TOO_LARGE, f"{len(data)} bytes when read, limit {max_bytes}; not kept")
            return data
        except NotFoundError as e:
            raise SourceFault(
                f"object {key!r} was listed but is gone from {self.url} ({self.endpoint}) when read: {e}",
                hint="nothing was committed or consumed; rerun once the source is stable",
            ) from e
        except (OSError, DataversionError) as e:
            if isinstance(e, SourceFault):
                raise
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise SourceFault(
                f"cannot read object {key!r} of {self.url} ({self.endpoint}): {why}",
                hint="nothing was committed or consumed; fix the store and rerun",
            ) from e


def _as_pair(
    check: Callable[[bytes, int], Drop | None],
) -> Callable[[bytes, int], tuple[str, str] | None]:
    def pair(head: bytes, size: int) -> tuple[str, str] | None:
        drop = check(head, size)
        return None if drop is None else (drop.reason, drop.message)

    return pair


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
