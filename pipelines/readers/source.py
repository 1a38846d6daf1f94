"""Raw input sources: a local directory or an S3 prefix, listed with a change token.

The token (`etag`) is what incremental ingestion compares: the S3 ETag, or for local files
`<size>-<mtime_ns>`. A `Source` is a small picklable value; the S3 client is created lazily
in each process that reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlparse

from dataversion.errors import BadInputError, NotFoundError, StoreError


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

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    @property
    def root(self) -> str:
        return urlparse(self.url).path if self.url.startswith("file://") else self.url

    def _s3(self):
        from dataversion.stores.s3 import S3Store

        u = urlparse(self.url)
        if not u.netloc:
            raise BadInputError(f"source URL {self.url!r} names no bucket")
        return S3Store(u.netloc, u.path.lstrip("/"))

    def list(self) -> list[RawObject]:
        """Every object under the source, sorted by key. Hidden files/dirs (.name) skipped."""
        if self.is_s3:
            store = self._s3()
            out = []
            try:
                for obj in store.client.list_objects(
                    store.bucket, prefix=store.prefix, recursive=True
                ):
                    if obj.is_dir:
                        continue
                    key = obj.object_name[len(store.prefix) :]
                    if any(part.startswith(".") for part in key.split("/")):
                        continue
                    out.append(RawObject(key, (obj.etag or "").strip('"'), obj.size or 0))
            except Exception as e:  # noqa: BLE001 - one clear error
                raise StoreError(f"cannot list {self.url}: {e}") from e
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
