"""Object stores: `open_store(url)` picks the backend from the URL scheme."""

from __future__ import annotations

import os
from urllib.parse import urlparse

from ..errors import BadInputError
from .base import ObjectInfo, Store
from .local import LocalStore
from .memory import MemoryStore

__all__ = ["ObjectInfo", "Store", "LocalStore", "MemoryStore", "open_store", "open_location", "normalize_url"]


def normalize_url(url: str) -> str:
    """file:// for plain paths; other schemes unchanged."""
    if "://" not in url:
        return "file://" + os.path.abspath(os.path.expanduser(url))
    return url


def open_store(url: str, *, create: bool = False, create_bucket: bool = False, **options: object) -> Store:
    """Open the store a repository URL names: file://PATH, s3://BUCKET/PREFIX, memory://NAME.

    `create`: make a missing local directory (an S3 prefix needs no making). `create_bucket`:
    make a missing S3 bucket; without it a missing bucket is NotFoundError, never created by
    accident (a typo in a bucket name must not become a new bucket)."""
    url = normalize_url(url)
    u = urlparse(url)
    if u.scheme == "file":
        path = u.path if not u.netloc else "/" + u.netloc + u.path
        if not path:
            raise BadInputError(f"repository URL {url!r} names no directory")
        return LocalStore(path, create=create)
    if u.scheme in ("s3", "minio"):
        from .s3 import S3Store

        if not u.netloc:
            raise BadInputError(f"repository URL {url!r} names no bucket", hint="use s3://BUCKET/PREFIX")
        return S3Store(u.netloc, u.path.lstrip("/"), create_bucket=create_bucket, **options)  # type: ignore[arg-type]
    if u.scheme == "memory":
        return MemoryStore(u.netloc or "memory")
    raise BadInputError(f"unsupported repository URL {url!r}", hint="use file://PATH or s3://BUCKET/PREFIX")


def open_location(location: str, *, for_write: bool = False) -> tuple[Store, str]:
    """The store holding the single object a path or URL names, and its key there.

    `s3://BUCKET/KEY` -> (the store of s3://BUCKET, "KEY"); a local path or file:// URL ->
    (the store of its directory, its file name); memory://NAME/KEY likewise by name.
    `for_write`: the object is about to be written, so a missing local directory is made
    (as an S3 prefix needs no making); a bucket is never created. Raises BadInputError when
    the location names no object, NotFoundError when its directory or bucket is missing.
    """
    # Split by hand, not by urlparse: a file name may hold "#" or "?".
    scheme, _, rest = normalize_url(location).partition("://")
    if scheme == "file":
        directory, key = os.path.split(rest)
    else:
        container, _, key = rest.partition("/")
    if not key or key.endswith("/"):
        raise BadInputError(f"{location!r} names no object", hint="use s3://BUCKET/KEY or a file path")
    if scheme == "file":
        return LocalStore(directory, create=for_write), key
    return open_store(f"{scheme}://{container}"), key
