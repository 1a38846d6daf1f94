"""Shard reads through Alluxio workers (`alluxiofs`), falling back to the object store."""

from __future__ import annotations

import logging
import os
import socket
import threading
import warnings
from typing import Any

import pyarrow as pa

from ..errors import BadInputError, CorruptObjectError
from ..shards import shard_key
from .base import ReadTier, fetch_verified
from .local import LocalDiskCache

log = logging.getLogger("dataversion.cache")


class AlluxioCache(ReadTier):
    """Shard reads through Alluxio workers (alluxiofs), for s3:// repositories.

    Workers come from `worker_hosts` ("h1,h2"), else DATAVERSION_ALLUXIO_WORKERS; or etcd
    from `etcd_hosts` / DATAVERSION_ALLUXIO_ETCD. If no worker answers a TCP connect within
    `connect_timeout` seconds (or a read through Alluxio fails), one warning is issued and
    every later read goes straight to the object store: training continues, a little slower.
    """

    name = "alluxio"

    def __init__(
        self,
        worker_hosts: str | None = None,
        *,
        worker_http_port: int | None = None,
        etcd_hosts: str | None = None,
        connect_timeout: float = 1.0,
        local: LocalDiskCache | None = None,
    ):
        self.worker_hosts = worker_hosts or os.environ.get("DATAVERSION_ALLUXIO_WORKERS") or ""
        self.etcd_hosts = etcd_hosts or os.environ.get("DATAVERSION_ALLUXIO_ETCD") or ""
        self.worker_http_port = int(worker_http_port or os.environ.get("DATAVERSION_ALLUXIO_HTTP_PORT") or 28080)
        if not self.worker_hosts and not self.etcd_hosts:
            raise BadInputError(
                "the Alluxio tier needs worker hosts or etcd hosts",
                hint="set DATAVERSION_ALLUXIO_WORKERS=host1,host2 or DATAVERSION_ALLUXIO_ETCD=host:2379",
            )
        self.connect_timeout = connect_timeout
        self.local = local
        self._fs = None
        self._fallback: bool | None = None  # None: not probed yet
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d["_fs"] = None
        d["_lock"] = None
        return d

    def __setstate__(self, d: dict) -> None:
        self.__dict__.update(d)
        self._lock = threading.Lock()

    def _endpoints(self) -> list[tuple[str, int]]:
        if self.worker_hosts:
            out = []
            for h in self.worker_hosts.split(","):
                host, _, port = h.strip().partition(":")
                out.append((host, int(port) if port else self.worker_http_port))
            return out
        out = []
        for h in self.etcd_hosts.split(","):
            host, _, port = h.strip().partition(":")
            out.append((host, int(port) if port else 2379))
        return out

    def reachable(self) -> bool:
        """Whether any worker (or etcd host) accepts a TCP connection within the timeout."""
        for host, port in self._endpoints():
            try:
                with socket.create_connection((host, port), timeout=self.connect_timeout):
                    return True
            except OSError:
                continue
        return False

    def _fall_back(self, why: str) -> None:
        self._fallback = True
        warnings.warn(f"Alluxio is unreachable ({why}); reading shards from the object store instead", RuntimeWarning, stacklevel=3)

    def probe(self) -> bool:
        """Check once; on failure warn (once) and switch to the object store. True if live."""
        if self._fallback is None:
            if self.reachable():
                self._fallback = False
            else:
                self._fall_back(f"no answer from {self.worker_hosts or self.etcd_hosts} within {self.connect_timeout:g} s")
        return not self._fallback

    def _filesystem(self, store: Any):
        if self._fs is None:
            from alluxiofs import AlluxioFileSystem

            target_options = {}
            endpoint = getattr(store, "endpoint", None)
            if endpoint:
                target_options = {
                    "client_kwargs": {"endpoint_url": endpoint},
                    "key": os.environ.get("AWS_ACCESS_KEY_ID"),
                    "secret": os.environ.get("AWS_SECRET_ACCESS_KEY"),
                }
            kwargs: dict[str, Any] = {"target_protocol": "s3", "target_options": target_options}
            if self.worker_hosts:
                kwargs["worker_hosts"] = self.worker_hosts
                kwargs["worker_http_port"] = self.worker_http_port
            else:
                kwargs["etcd_hosts"] = self.etcd_hosts
            self._fs = AlluxioFileSystem(**kwargs)
        return self._fs

    def _alluxio_fetch(self, store: Any, shard_id: str):
        bucket = getattr(store, "bucket", None)
        if bucket is None:
            return None  # not an s3:// store: nothing Alluxio can mount
        path = f"s3://{bucket}/{getattr(store, 'prefix', '')}{shard_key(shard_id)}"

        def fetch() -> bytes:
            return self._filesystem(store).cat_file(path)

        return fetch

    def read(self, store: Any, shard_id: str) -> pa.Buffer:
        fetch = self._alluxio_fetch(store, shard_id) if self.probe() else None
        if fetch is not None:
            try:
                return pa.py_buffer(fetch_verified(store, shard_id, fetch))
            except CorruptObjectError:
                raise
            except Exception as e:  # noqa: BLE001 - any Alluxio failure means: use the store
                with self._lock:
                    if not self._fallback:
                        self._fall_back(f"{type(e).__name__}: {e}")
        if self.local is not None:
            return self.local.read(store, shard_id)
        return pa.py_buffer(fetch_verified(store, shard_id))

    def ensure(self, store: Any, shard_id: str) -> bool:
        self.read(store, shard_id)
        return True

    def purge(self, store: Any, shard_ids: set[str]) -> int:
        """Drop the local copies, and remove the paths through Alluxio (which drops its cached
        blocks of them; the objects are garbage an erasure left for gc). Best effort on the
        Alluxio side: a failure there is logged, the shards are never requested again anyway
        (a replacement has another id)."""
        n = self.local.purge(store, shard_ids) if self.local is not None else 0
        bucket = getattr(store, "bucket", None)
        if bucket is None or not shard_ids or not self.probe():
            return n
        fs = self._filesystem(store)
        for sid in sorted(shard_ids):
            path = f"s3://{bucket}/{getattr(store, 'prefix', '')}{shard_key(sid)}"
            try:
                if fs.exists(path):
                    fs.rm_file(path)
                    n += 1
            except Exception as e:  # noqa: BLE001 - any Alluxio failure: the id is never read again
                log.warning("could not remove %s through Alluxio: %s", path, e)
        return n

    def status(self) -> dict[str, Any]:
        return {
            "tier": self.name,
            "worker_hosts": self.worker_hosts or None,
            "etcd_hosts": self.etcd_hosts or None,
            "reachable": self.reachable(),
        }
