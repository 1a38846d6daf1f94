"""In-flight markers: what a running writer tells `gc` so its new objects are not collected.

A commit, an ingest run or any writer that stores objects before a ref names them holds an
`InFlight` marker (`inflight/<id>.json`) while it works. gc keeps every unreachable object
younger than the oldest live marker, and everything under a live marker's scratch prefix,
whatever `--grace` says. A writer that reuses an object already stored refreshes its
mtime (`Store.touch`), so reused objects count as young too. A marker whose heartbeat is
older than its time-to-live, or whose process on this machine is gone, belongs to a dead
writer and stops protecting anything.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from .errors import CorruptObjectError, NotFoundError
from .hashing import canonical_json
from .stores.base import Store

INFLIGHT = "inflight/"


def marker_ttl() -> float:
    """Seconds after its last heartbeat that a marker stops protecting (DATAVERSION_INFLIGHT_TTL)."""
    return float(os.environ.get("DATAVERSION_INFLIGHT_TTL", "900"))


@dataclass(frozen=True)
class Marker:
    key: str
    started: float
    heartbeat: float
    what: str
    scratch: str | None
    host: str = ""
    pid: int = 0

    def writer_is_dead(self) -> bool:
        """True when the writer ran on this machine and its process is gone (killed)."""
        if self.host != socket.gethostname() or self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


class InFlight:
    """Context manager: hold a marker while writing; a heartbeat thread keeps it fresh."""

    def __init__(self, store: Store, what: str, *, scratch: str | None = None, heartbeat_seconds: float | None = None):
        self.store, self.what, self.scratch = store, what, scratch
        self.heartbeat_seconds = heartbeat_seconds if heartbeat_seconds is not None else marker_ttl() / 5
        self.key = f"{INFLIGHT}{time.time_ns():020d}-{secrets.token_hex(4)}.json"
        self.started = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> None:
        body = {"started": self.started, "heartbeat": time.time(), "what": self.what, "scratch": self.scratch,
                "host": socket.gethostname(), "pid": os.getpid()}
        # a live process's marker: visible to a gc at once; after a power cut there is no
        # process left to protect, so it need not survive one (`put_transient`)
        self.store.put_transient(self.key, canonical_json(body))

    def __enter__(self) -> InFlight:
        self.started = time.time()
        self._write()
        self._thread = threading.Thread(target=self._beat, name="dataversion-inflight", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                self._write()
            except Exception:  # noqa: BLE001 - a missed heartbeat is retried at the next beat
                continue

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            self.store.delete(self.key)
        except Exception:  # noqa: BLE001 - a leftover marker expires by itself
            pass


def live_markers(store: Store, now: float | None = None) -> list[Marker]:
    """Markers whose heartbeat is within the time-to-live. An unreadable marker stops the
    caller (CorruptObjectError): gc must not guess what a writer it cannot read is doing."""
    now = time.time() if now is None else now
    ttl = marker_ttl()
    out = []
    for info in store.list(INFLIGHT):
        if info.mtime < now - ttl:
            continue
        try:
            d = json.loads(store.get(info.key))
            out.append(Marker(info.key, float(d["started"]), float(d.get("heartbeat", info.mtime)), str(d.get("what", "")),
                              d.get("scratch"), str(d.get("host", "")), int(d.get("pid", 0))))
        except NotFoundError:
            continue  # the writer finished meanwhile
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptObjectError(f"in-flight marker {info.key} is unreadable: {e}", hint="delete it if no writer is running") from e
    return [m for m in out if m.heartbeat >= now - ttl and not m.writer_is_dead()]
