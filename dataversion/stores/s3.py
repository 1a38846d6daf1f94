"""s3:// store through the `minio` SDK (MinIO, SeaweedFS, AWS S3, any S3).

Endpoint and credentials: explicit arguments, else AWS_ENDPOINT_URL (or S3_ENDPOINT_URL),
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION. TLS follows the
endpoint scheme (https by default). Transient failures (connection errors, timeouts, 5xx,
SlowDown) are retried with exponential backoff, DATAVERSION_S3_RETRIES attempts in all (5),
each retry logged as one WARNING line on the `dataversion.s3` logger; permanent ones raise
StoreError naming the endpoint, bucket and key. DATAVERSION_S3_CONNECT_TIMEOUT (5 s) and
DATAVERSION_S3_READ_TIMEOUT (30 s without a byte, as the AWS SDKs wait 60 s) bound each
request: a stalled endpoint is a WARNING line within half a minute, not minutes of silence.

Compare-and-swap uses S3 conditional requests (`If-None-Match: *`, `If-Match: <etag>` on PUT;
`If-Match` on DELETE). The SDK's public `put_object` turns unknown headers into user
metadata and `remove_object` takes no headers, so conditional requests go through
`Minio._put_object` and `Minio._execute`, each wrapped in exactly one place
(`_conditional_put`, `_conditional_delete`). Both are idempotent under retries: after a
transient failure they read the object back before deciding to resend (see `_settle`).
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import TypeVar
from urllib.parse import urlparse

from ..errors import BadInputError, ConflictError, NotFoundError, StoreError
from .base import ObjectInfo, Store
from .seekable import ReadOnlySeekable

logger = logging.getLogger("dataversion.s3")

T = TypeVar("T")

_PERMANENT_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "NoSuchBucket",
    "InvalidBucketName",
    "AllAccessDisabled",
}
_TRANSIENT_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed"}
_PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}
_MISSING_KEY_CODES = {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}
_MISSING_BUCKET_HINT = "create it, or pass --create-bucket to `dataversion init`"


def _is_transient(exc: BaseException) -> bool:
    from minio.error import S3Error, ServerError

    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    if isinstance(exc, S3Error):
        return exc.code in _TRANSIENT_CODES
    import urllib3.exceptions

    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


def _cause(exc: BaseException) -> str:
    """What went wrong, in a few words: "unreachable (ConnectionRefused)", "timed out (ReadTimeout)"."""
    import urllib3.exceptions as ue
    from minio.error import S3Error, ServerError

    if isinstance(exc, ServerError):
        return f"failed (HTTP {exc.status_code})"
    if isinstance(exc, S3Error):
        return f"failed ({exc.code})"
    inner: BaseException = exc
    if isinstance(inner, ue.MaxRetryError) and inner.reason is not None:
        inner = inner.reason
    if isinstance(inner, ue.ProtocolError) and len(inner.args) > 1 and isinstance(inner.args[1], BaseException):
        inner = inner.args[1]  # ("Connection aborted.", RemoteDisconnected(...))
    # Before the timeouts: urllib3's NewConnectionError (refused, no route) is a ConnectTimeoutError.
    if "refused" in str(inner).lower():
        return "unreachable (ConnectionRefused)"
    if isinstance(inner, ue.NewConnectionError):
        return "unreachable (NewConnection)"
    if isinstance(inner, (ue.TimeoutError, TimeoutError)):
        return f"timed out ({type(inner).__name__.removesuffix('Error')})"
    return f"unreachable ({type(inner).__name__.removesuffix('Error')})"


def _backoff_s(attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): 0.2, 0.4, 0.8... max 5."""
    return min(5.0, 0.2 * 2 ** (attempt - 1))


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
        create_bucket: bool = False,
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
        self.attempts = max(1, int(os.environ.get("DATAVERSION_S3_RETRIES", "5")))
        try:
            import certifi
            import urllib3

            # One retry policy, ours (tenacity, with backoff): the SDK's own urllib3 retries
            # would multiply it, and a refused connection would take half a minute to report.
            http = urllib3.PoolManager(
                timeout=urllib3.Timeout(
                    connect=float(os.environ.get("DATAVERSION_S3_CONNECT_TIMEOUT", "5")),
                    read=float(os.environ.get("DATAVERSION_S3_READ_TIMEOUT", "30")),
                ),
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
        self._check_bucket(create_bucket)

    # -- helpers -----------------------------------------------------------------------
    def _k(self, key: str) -> str:
        return self.prefix + key

    def _what(self, key: str) -> str:
        return f"{self._k(key)} in bucket {self.bucket}" if key or self.prefix else f"bucket {self.bucket}"

    def _fail(self, exc: BaseException, key: str, verb: str) -> Exception:
        """The DataversionError to raise for `exc`, naming the endpoint, bucket and key."""
        from minio.error import S3Error

        what = self._what(key) if verb != "open" else f"bucket {self.bucket}"
        if isinstance(exc, S3Error):
            if exc.code in _MISSING_KEY_CODES and verb != "open":
                return NotFoundError(f"object {key} not found in {self.url}")
            if exc.code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return StoreError(
                    f"S3 rejected the credentials while trying to {verb} {what} at {self.endpoint}: {exc.code}",
                    hint="check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
                )
            if exc.code == "NoSuchBucket":
                return NotFoundError(f"bucket {self.bucket} does not exist at {self.endpoint}", hint=_MISSING_BUCKET_HINT)
            if not _is_transient(exc):
                return StoreError(f"S3 error {exc.code} while trying to {verb} {what} at {self.endpoint}: {exc.message}")
        return StoreError(
            f"cannot {verb} {what} at {self.endpoint}: S3 endpoint {_cause(exc)}, "
            f"gave up after {self.attempts} attempt{'s' if self.attempts > 1 else ''}",
            hint="is the S3 endpoint up? check AWS_ENDPOINT_URL (or --endpoint-url); DATAVERSION_S3_RETRIES sets the attempts",
        )

    def _pause(self, doing: str, key: str | None, exc: BaseException, attempt: int) -> None:
        """Log the transient failure of attempt `attempt` on `key` (None: the bucket itself)
        and wait before the next one."""
        wait = _backoff_s(attempt)
        target = f"bucket {self.bucket}" if key is None else f"s3://{self.bucket}/{self._k(key)}"
        logger.warning("S3 endpoint %s %s %s %s; retry %d/%d in %.1fs",
                       self.endpoint, _cause(exc), doing, target, attempt, self.attempts - 1, wait)
        time.sleep(wait)

    def _with_retries(self, doing: str, key: str | None, fn: Callable[[], T]) -> T:
        """`fn()`, retried on transient failures (the one retry policy of this store).

        A hand-written loop rather than a decorator: the conditional writes and listings must
        change what their next attempt does, and all of them must log each retry."""
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except Exception as e:  # noqa: BLE001 - re-raised unless transient
                if not _is_transient(e) or attempt == self.attempts:
                    raise
                self._pause(doing, key, e, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _check_bucket(self, create_bucket: bool) -> None:
        try:
            exists = self._with_retries("opening", None, lambda: self.client.bucket_exists(self.bucket))
            if not exists:
                if not create_bucket:
                    raise NotFoundError(f"bucket {self.bucket} does not exist at {self.endpoint}", hint=_MISSING_BUCKET_HINT)
                self._with_retries("creating", None, lambda: self.client.make_bucket(self.bucket))
        except NotFoundError:
            raise
        except Exception as e:  # noqa: BLE001 - converted to a clear error
            raise self._fail(e, "", "open") from e

    # -- Store -------------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        return self.get_versioned(key)[0]

    def _get_once(self, key: str) -> tuple[bytes, str]:
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

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        try:
            return self._with_retries("reading", key, lambda: self._get_once(key))
        except Exception as e:  # noqa: BLE001
            raise self._fail(e, key, "read") from e

    def put(self, key: str, data: bytes) -> None:
        def _put() -> None:
            self.stats["PUT"] += 1
            self.client.put_object(self.bucket, self._k(key), io.BytesIO(data), len(data))

        try:
            self._with_retries("writing", key, _put)
        except Exception as e:  # noqa: BLE001
            raise self._fail(e, key, "write") from e

    def _settle(self, key: str, ours: bytes | None, old_etag: str | None) -> bool | None:
        """After a conditional request failed transiently (its reply may be lost although the
        server did it), read the object back once and decide: True, it is as we meant to leave
        it (our bytes, or gone for a delete); None, untouched (absent for a create, still at
        `old_etag` otherwise), so resending is safe; False, someone else changed it: the CAS lost.

        Identical bytes from another writer count as ours: the outcome is the same (a ref holds
        the commit it was meant to). Transient errors of this read propagate to the caller's loop.
        """
        from minio.error import S3Error

        try:
            current, etag = self._get_once(key)
        except S3Error as e:
            if e.code not in _MISSING_KEY_CODES:
                raise
            current, etag = None, None
        if current is None:
            if ours is None:
                return True  # a delete: gone, as meant
            return None if old_etag is None else False  # create: resend; replace: it was deleted
        if ours is not None and current == ours:
            return True
        if old_etag is not None and etag == old_etag:
            return None
        return False

    def _conditional(self, doing: str, key: str, ours: bytes | None, old_etag: str | None, send: Callable[[], None]) -> bool:
        """Run one conditional request (`send`) idempotently. False when its precondition failed.

        A blind resend after a lost reply would fail its precondition against our own write and
        report a conflict for a write that landed; so after any transient failure the next
        attempt first settles what the server holds (`_settle`), and a precondition failure
        that follows a transient one is settled again (the first request may have landed late).
        """
        from minio.error import S3Error

        maybe_landed = False
        for attempt in range(1, self.attempts + 1):
            try:
                if maybe_landed:
                    verdict = self._settle(key, ours, old_etag)
                    if verdict is not None:
                        return verdict
                try:
                    send()
                    return True
                except S3Error as e:
                    lost = e.code in _PRECONDITION_CODES or (e.code in _MISSING_KEY_CODES and old_etag is not None)
                    if not lost:  # (AWS answers If-Match on a deleted key with 404: the CAS lost)
                        raise
                    return bool(maybe_landed and self._settle(key, ours, old_etag))
            except Exception as e:  # noqa: BLE001 - re-raised unless transient
                if not _is_transient(e) or attempt == self.attempts:
                    raise
                maybe_landed = True
                self._pause(doing, key, e, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _conditional_put(self, key: str, data: bytes, headers: dict[str, str]) -> bool:
        """PUT with one conditional header (If-None-Match: * or If-Match: "etag"). False when
        the precondition failed. The only caller of the SDK's private `_put_object`."""

        def send() -> None:
            self.stats["PUT"] += 1
            # A fresh dict each attempt: the SDK adds its signature headers to the one it gets.
            self.client._put_object(self.bucket, self._k(key), data, headers=dict(headers))  # noqa: SLF001

        old_etag = headers.get("If-Match", "").strip('"') or None
        try:
            done = self._conditional("writing", key, data, old_etag, send)
        except Exception as e:  # noqa: BLE001
            raise self._fail(e, key, "write") from e
        if done or old_etag is not None or self.exists(key):
            return done
        # SeaweedFS fails If-None-Match on a key that is a directory in its filer, even an empty
        # one left behind by deleted keys below it (`refs/heads/a` after `refs/heads/a/b` was
        # deleted), although GET says NoSuchKey. Remove that directory if it is empty (checked:
        # DELETE "key/" never removes what is under it) and try once more.
        self.delete(key + "/")
        try:
            done = self._conditional("writing", key, data, None, send)
        except Exception as e:  # noqa: BLE001
            raise self._fail(e, key, "write") from e
        if not done and not self.exists(key):
            raise StoreError(f"cannot create {key} in {self.url}: it is a directory holding other keys")
        return done

    def _conditional_delete(self, key: str, etag: str) -> bool:
        """DELETE with If-Match: "etag". False when the precondition failed (the object moved or
        is gone). SeaweedFS (checked: a stale ETag gets 412, the right one 204) and AWS S3 honour
        If-Match on DeleteObject; a server that ignored it would fail the store contract tests.
        The only caller of the SDK's private `_execute`."""

        def send() -> None:
            self.stats["DELETE"] += 1
            self.client._execute("DELETE", self.bucket, self._k(key), headers={"If-Match": f'"{etag}"'})  # noqa: SLF001

        try:
            return self._conditional("deleting", key, None, etag, send)
        except Exception as e:  # noqa: BLE001
            raise self._fail(e, key, "delete") from e

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self._conditional_put(key, data, {"If-None-Match": "*"})

    def put_if_match(self, key: str, data: bytes, token: str) -> None:
        if not self._conditional_put(key, data, {"If-Match": f'"{token}"'}):
            raise ConflictError(f"{key} was updated by another writer")

    def delete_if_match(self, key: str, token: str) -> None:
        if not self._conditional_delete(key, token):
            raise ConflictError(f"{key} was updated or deleted by another writer")

    def touch(self, key: str) -> None:
        """S3 has no utime: copy the object onto itself with new metadata (server-side)."""
        from minio.commonconfig import REPLACE, CopySource

        def _copy() -> None:
            self.stats["COPY"] += 1
            self.client.copy_object(
                self.bucket, self._k(key), CopySource(self.bucket, self._k(key)),
                metadata={"x-amz-meta-dataversion-freshened": str(int(time.time()))}, metadata_directive=REPLACE,
            )

        try:
            self._with_retries("refreshing", key, _copy)
        except Exception as e:  # noqa: BLE001
            err = self._fail(e, key, "refresh")
            if not isinstance(err, NotFoundError):
                raise err from e

    def delete(self, key: str) -> None:
        def _del() -> None:
            self.stats["DELETE"] += 1
            self.client.remove_object(self.bucket, self._k(key))

        try:
            self._with_retries("deleting", key, _del)
        except Exception as e:  # noqa: BLE001
            err = self._fail(e, key, "delete")
            if not isinstance(err, NotFoundError):
                raise err from e

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Retried like every request: a listing cut by a transient failure resumes after the
        last key it yielded (StartAfter), so no key is lost or listed twice."""
        self.stats["LIST"] += 1
        start_after: str | None = None
        attempt = 1
        while True:
            progressed = False
            try:
                for obj in self.client.list_objects(self.bucket, prefix=self._k(prefix), recursive=True, start_after=start_after):
                    start_after, progressed = obj.object_name, True
                    if obj.is_dir:
                        continue
                    key = obj.object_name[len(self.prefix):]
                    mtime = obj.last_modified.timestamp() if obj.last_modified else 0.0
                    yield ObjectInfo(key, obj.size or 0, mtime, (obj.etag or "").strip('"') or None)
                return
            except Exception as e:  # noqa: BLE001
                attempt = 1 if progressed else attempt  # count consecutive failures only
                if not _is_transient(e) or attempt >= self.attempts:
                    raise self._fail(e, prefix, "list") from e
                self._pause("listing", prefix, e, attempt)
                attempt += 1
                self.stats["LIST"] += 1

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        def _stat() -> None:
            self.stats["HEAD"] += 1
            self.client.stat_object(self.bucket, self._k(key))

        try:
            self._with_retries("checking", key, _stat)
            return True
        except S3Error as e:
            if e.code in _MISSING_KEY_CODES:
                return False
            raise self._fail(e, key, "stat") from e
        except Exception as e:  # noqa: BLE001
            raise self._fail(e, key, "stat") from e

    def open_input(self, key: str) -> _RangeFile:
        """A seekable file over the object that fetches only the byte ranges read (GET Range)."""

        def _size() -> int:
            self.stats["HEAD"] += 1
            return self.client.stat_object(self.bucket, self._k(key)).size

        try:
            size = self._with_retries("checking", key, _size)
        except Exception as e:  # noqa: BLE001
            raise self._fail(e, key, "read") from e
        return _RangeFile(self, key, size)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
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
            return self._with_retries("reading", key, _get)
        except Exception as e:  # noqa: BLE001
            raise self._fail(e, key, "read") from e

    def put_file(self, key: str, path: str) -> None:
        def _put() -> None:
            self.stats["PUT"] += 1
            self.client.fput_object(self.bucket, self._k(key), path)

        try:
            self._with_retries("writing", key, _put)
        except Exception as e:  # noqa: BLE001
            raise self._fail(e, key, "write") from e


class _RangeFile(ReadOnlySeekable):
    """Read-only seekable view of one S3 object; each read is one ranged GET."""

    def __init__(self, store: S3Store, key: str, size: int):
        super().__init__(size)
        self._store, self._key = store, key

    def _read_at(self, offset: int, n: int) -> bytes:
        return self._store.read_range(self._key, offset, n)
