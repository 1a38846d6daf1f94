"""s3:// store through the `minio` SDK (MinIO, SeaweedFS, AWS S3, any S3).

Endpoint and credentials: explicit arguments, else AWS_ENDPOINT_URL (or S3_ENDPOINT_URL),
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION. TLS follows the
endpoint scheme (https by default). Transient failures (connection errors, 5xx, SlowDown)
are retried with exponential backoff; permanent ones raise StoreError naming the key.

Compare-and-swap uses S3 conditional writes (`If-None-Match: *`, `If-Match: <etag>`).
The SDK's public `put_object` turns unknown headers into user metadata, so conditional
headers go through `Minio._put_object`, wrapped in exactly one place: `_conditional_put`.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from urllib.parse import urlparse

from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from ..errors import BadInputError, ConflictError, NotFoundError, StoreError
from .base import ObjectInfo, Store

_PERMANENT_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "NoSuchBucket",
    "InvalidBucketName",
    "AllAccessDisabled",
}
_TRANSIENT_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed"}


def _is_transient(exc: BaseException) -> bool:
    from minio.error import S3Error, ServerError

    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    if isinstance(exc, S3Error):
        return exc.code in _TRANSIENT_CODES
    import urllib3.exceptions

    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


_retry = retry(
    retry=retry_if_exception(_is_transient),
    wait=wait_exponential(multiplier=0.2, max=5),
    stop=stop_after_attempt(int(os.environ.get("DATAVERSION_S3_RETRIES", "5"))),
    reraise=True,
)


def endpoint_from_env(endpoint: str | None = None) -> tuple[str, bool]:
    """(host:port, secure) from an explicit endpoint or the environment."""
    raw = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT_URL")
    if not raw:
        return "s3.amazonaws.com", True
    if "://" not in raw:
        raw = "https://" + raw
    u = urlparse(raw)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise BadInputError(f"invalid S3 endpoint {raw!r}", hint="use http://host:port or https://host")
    return u.netloc, u.scheme == "https"


class S3Store(Store):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        region: str | None = None,
        create: bool = False,
    ):
        super().__init__()
        try:
            from minio import Minio
        except ImportError as e:  # pragma: no cover - depends on extras
            raise StoreError("s3:// repositories need the minio SDK", hint="pip install 'dataversion[s3]'") from e
        host, secure = endpoint_from_env(endpoint)
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint = ("https://" if secure else "http://") + host
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        try:
            import certifi
            import urllib3

            # One retry policy, ours (tenacity, with backoff): the SDK's own urllib3 retries
            # would multiply it, and a refused connection would take half a minute to report.
            http = urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=float(os.environ.get("DATAVERSION_S3_CONNECT_TIMEOUT", "5")), read=300),
                maxsize=16,
                cert_reqs="CERT_REQUIRED",
                ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
                retries=urllib3.Retry(total=0, connect=0, read=0, redirect=3, status=0),
            )
            self.client = Minio(
                host,
                http_client=http,
                access_key=access_key or os.environ.get("AWS_ACCESS_KEY_ID"),
                secret_key=secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY"),
                session_token=session_token or os.environ.get("AWS_SESSION_TOKEN"),
                secure=secure,
                region=region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
            )
        except ValueError as e:
            raise BadInputError(f"invalid S3 bucket or endpoint for {self.url}: {e}") from e
        self._check_bucket(create)

    # -- helpers -----------------------------------------------------------------------
    def _k(self, key: str) -> str:
        return self.prefix + key

    def _fail(self, exc: BaseException, key: str, verb: str) -> Exception:
        from minio.error import S3Error

        if isinstance(exc, S3Error):
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                return NotFoundError(f"object {key} not found in {self.url}")
            if exc.code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return StoreError(
                    f"S3 rejected the credentials while trying to {verb} {self._k(key)} in bucket {self.bucket}: {exc.code}",
                    hint="check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
                )
            if exc.code == "NoSuchBucket":
                return NotFoundError(f"bucket {self.bucket} does not exist at {self.endpoint}", hint="create it or run `dataversion init`")
            return StoreError(f"S3 error {exc.code} while trying to {verb} {self._k(key)} in bucket {self.bucket}: {exc.message}")
        return StoreError(f"cannot {verb} {self._k(key)} at {self.endpoint}: {exc}", hint="is the S3 endpoint reachable?")

    def _check_bucket(self, create: bool) -> None:
        try:
            exists = _retry(self.client.bucket_exists)(self.bucket)
            if not exists:
                if not create:
                    raise NotFoundError(f"bucket {self.bucket} does not exist at {self.endpoint}", hint="create it or run `dataversion init`")
                _retry(self.client.make_bucket)(self.bucket)
        except NotFoundError:
            raise
        except Exception as e:  # noqa: BLE001 - converted to a clear error
            from minio.error import S3Error

            if isinstance(e, S3Error):
                raise self._fail(e, "", "open bucket") from e
            raise StoreError(
                f"cannot reach the S3 endpoint {self.endpoint} to open bucket {self.bucket}: {type(e).__name__}",
                hint="check AWS_ENDPOINT_URL (or --endpoint-url) and that the server is up",
            ) from e

    # -- Store -------------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        return self.get_versioned(key)[0]

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        @_retry
        def _get() -> tuple[bytes, str]:
            self.stats["GET"] += 1
            resp = self.client.get_object(self.bucket, self._k(key))
            try:
                data = resp.read()
                self.stats["GET_BYTES"] += len(data)
                etag = resp.headers.get("ETag", "").strip('"')
            finally:
                resp.close()
                resp.release_conn()
            return data, etag

        try:
            return _get()
        except Exception as e:  # noqa: BLE001
            raise self._fail(e, key, "read") from e

    def put(self, key: str, data: bytes) -> None:
        @_retry
        def _put() -> None:
            self.stats["PUT"] += 1
            self.client.put_object(self.bucket, self._k(key), io.BytesIO(data), len(data))

        try:
            _put()
        except Exception as e:  # noqa: BLE001
            raise self._fail(e, key, "write") from e

    def _conditional_put(self, key: str, data: bytes, headers: dict[str, str]) -> bool:
        """PUT with conditional headers. False when the precondition failed."""
        from minio.error import S3Error

        @_retry
        def _put() -> None:
            self.stats["PUT"] += 1
            self.client._put_object(self.bucket, self._k(key), data, headers=headers)  # noqa: SLF001

        try:
            _put()
            return True
        except S3Error as e:
            if e.code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            if e.code in ("NoSuchKey", "NoSuchObject") and "If-Match" in headers:
                return False  # AWS answers If-Match on a deleted key with 404: the CAS lost
            raise self._fail(e, key, "write") from e
        except Exception as e:  # noqa: BLE001
            raise self._fail(e, key, "write") from e

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self._conditional_put(key, data, {"If-None-Match": "*"})

    def put_if_match(self, key: str, data: bytes, token: str) -> None:
        if not self._conditional_put(key, data, {"If-Match": f'"{token}"'}):
            raise ConflictError(f"{key} was updated by another writer")

    def touch(self, key: str) -> None:
        """S3 has no utime: copy the object onto itself with new metadata (server-side)."""
        from minio.commonconfig import REPLACE, CopySource

        @_retry
        def _copy() -> None:
            self.stats["COPY"] += 1
            self.client.copy_object(
                self.bucket, self._k(key), CopySource(self.bucket, self._k(key)),
                metadata={"x-amz-meta-dataversion-freshened": str(int(time.time()))}, metadata_directive=REPLACE,
            )

        try:
            _copy()
        except Exception as e:  # noqa: BLE001
            err = self._fail(e, key, "refresh")
            if not isinstance(err, NotFoundError):
                raise err from e

    def delete(self, key: str) -> None:
        @_retry
        def _del() -> None:
            self.stats["DELETE"] += 1
            self.client.remove_object(self.bucket, self._k(key))

        try:
            _del()
        except Exception as e:  # noqa: BLE001
            err = self._fail(e, key, "delete")
            if not isinstance(err, NotFoundError):
                raise err from e

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self.stats["LIST"] += 1
        try:
            for obj in self.client.list_objects(self.bucket, prefix=self._k(prefix), recursive=True):
                if obj.is_dir:
                    continue
                key = obj.object_name[len(self.prefix):]
                mtime = obj.last_modified.timestamp() if obj.last_modified else 0.0
                yield ObjectInfo(key, obj.size or 0, mtime, (obj.etag or "").strip('"') or None)
        except Exception as e:  # noqa: BLE001
            raise self._fail(e, prefix, "list") from e

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        @_retry
        def _stat() -> None:
            self.stats["HEAD"] += 1
            self.client.stat_object(self.bucket, self._k(key))

        try:
            _stat()
            return True
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return False
            raise self._fail(e, key, "stat") from e
        except Exception as e:  # noqa: BLE001
            raise self._fail(e, key, "stat") from e

    def open_input(self, key: str) -> _RangeFile:
        """A seekable file over the object that fetches only the byte ranges read (GET Range)."""
        from minio.error import S3Error

        @_retry
        def _size() -> int:
            self.stats["HEAD"] += 1
            return self.client.stat_object(self.bucket, self._k(key)).size

        try:
            size = _size()
        except S3Error as e:
            raise self._fail(e, key, "read") from e
        return _RangeFile(self, key, size)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        @_retry
        def _get() -> bytes:
            self.stats["GET"] += 1
            resp = self.client.get_object(self.bucket, self._k(key), offset=offset, length=length)
            try:
                data = resp.read()
                self.stats["GET_BYTES"] += len(data)
                return data
            finally:
                resp.close()
                resp.release_conn()

        try:
            return _get()
        except Exception as e:  # noqa: BLE001
            raise self._fail(e, key, "read") from e

    def put_file(self, key: str, path: str) -> None:
        @_retry
        def _put() -> None:
            self.stats["PUT"] += 1
            self.client.fput_object(self.bucket, self._k(key), path)

        try:
            _put()
        except Exception as e:  # noqa: BLE001
            raise self._fail(e, key, "write") from e


class _RangeFile(io.RawIOBase):
    """Read-only seekable view of one S3 object; each read is one ranged GET."""

    def __init__(self, store: S3Store, key: str, size: int):
        super().__init__()
        self._store, self._key, self._size, self._pos = store, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buf) -> int:
        n = min(len(buf), self._size - self._pos)
        if n <= 0:
            return 0
        data = self._store.read_range(self._key, self._pos, n)
        buf[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._size - self._pos
        size = min(size, self._size - self._pos)
        if size <= 0:
            return b""
        data = self._store.read_range(self._key, self._pos, size)
        self._pos += len(data)
        return data
