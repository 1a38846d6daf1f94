"""A time-limited, exclusive lease kept as one object in a repository's store.

One holder at a time per lease name (e.g. one scheduled pipeline run per branch). The lease
object `leases/<name>.json` holds the owner, when it was taken, the last heartbeat and the
expiry. Every write is a compare-and-swap (`put_if_absent` to create, `put_if_match` on the
version that was read to take over, renew or release), never a plain `put`, so two
contenders can never both believe they won. A holder that dies stops renewing: its lease
blocks others until `expires_at`, then the first contender to swap it in takes over.

Release does not delete the object (an unconditional delete could remove a successor's
lease); it swaps in a record marked `released`, which any contender may take at once. The
record also carries the holder's `data` (the scheduler stores the slot it ran), so the
next holder can see what the previous one did, read atomically with the swap.

Expiry compares wall clocks of different machines: choose a TTL well above their skew.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ConflictError, DataversionError, NotFoundError
from .stores.base import Store

LEASE_PREFIX = "leases/"

log = logging.getLogger(__name__)


class LeaseLostError(ConflictError):
    """The lease was taken over or expired while we believed we held it."""


@dataclass(frozen=True)
class LeaseRecord:
    """The content of a lease object. Times are seconds since the epoch."""

    owner: str
    nonce: str  # one per acquisition: tells our own write apart after an ambiguous retry
    acquired_at: float
    heartbeat_at: float
    expires_at: float
    ttl: float
    released: bool = False
    data: dict[str, Any] = field(default_factory=dict)

    def is_free(self, now: float) -> bool:
        """Whether a contender may take the lease now (released or expired)."""
        return self.released or now >= self.expires_at

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseRecord:
        try:
            d = json.loads(data)
            return cls(
                owner=str(d["owner"]), nonce=str(d["nonce"]), acquired_at=float(d["acquired_at"]),
                heartbeat_at=float(d["heartbeat_at"]), expires_at=float(d["expires_at"]), ttl=float(d["ttl"]),
                released=bool(d.get("released", False)), data=dict(d.get("data") or {}),
            )
        except (ValueError, KeyError, TypeError) as e:
            # A corrupt lease must not block the schedule forever: callers treat it as free.
            raise ValueError(f"unreadable lease record: {e}") from e


def lease_key(name: str) -> str:
    """The store key of the lease called `name` (e.g. a branch name)."""
    if not name or name.startswith("/") or ".." in name.split("/"):
        raise ValueError(f"bad lease name {name!r}")
    return f"{LEASE_PREFIX}{name}.json"


def default_owner() -> str:
    """host:pid:random, unique per process and acquisition source."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def read_lease(store: Store, name: str) -> LeaseRecord | None:
    """The current lease record, or None if there is none (or it is unreadable)."""
    try:
        return LeaseRecord.from_bytes(store.get(lease_key(name)))
    except NotFoundError:
        return None
    except ValueError:
        return None


class Lease:
    """An exclusive lease on `name` in `store`, held by `owner` for `ttl` seconds per renewal.

    `try_acquire()` never blocks; `renew()` extends the expiry (or raises LeaseLostError);
    `release()` frees it for the next contender. `start_heartbeat()` renews in a daemon
    thread every ttl/3 and sets `lost` if the lease was taken over or could not be renewed
    before it expired. Usable as a context manager (acquire or raise ConflictError).
    """

    def __init__(self, store: Store, name: str, *, ttl: float = 60.0, owner: str | None = None,
                 clock: Callable[[], float] = time.time):
        if ttl <= 0:
            raise ValueError("lease ttl must be positive")
        self.store = store
        self.name = name
        self.key = lease_key(name)
        self.ttl = float(ttl)
        self.owner = owner or default_owner()
        self.clock = clock
        self.previous: LeaseRecord | None = None  # the record our acquisition replaced
        self.lost = threading.Event()
        self._record: LeaseRecord | None = None
        self._token: str | None = None
        self._lock = threading.Lock()  # renew (heartbeat thread) vs release (caller)
        self._stop_heartbeat = threading.Event()
        self._heartbeat: threading.Thread | None = None

    @property
    def held(self) -> bool:
        """Whether we hold the lease, as far as we know (not lost, not expired locally)."""
        rec = self._record
        return rec is not None and not self.lost.is_set() and self.clock() < rec.expires_at

    @property
    def record(self) -> LeaseRecord | None:
        return self._record

    def _new_record(self, now: float, data: dict[str, Any], acquired_at: float | None = None,
                    nonce: str | None = None) -> LeaseRecord:
        return LeaseRecord(owner=self.owner, nonce=nonce or uuid.uuid4().hex, acquired_at=acquired_at or now,
                           heartbeat_at=now, expires_at=now + self.ttl, ttl=self.ttl, data=data)

    def _read(self) -> tuple[LeaseRecord | None, str] | None:
        """(record or None if unreadable, token), or None if there is no lease object."""
        try:
            raw, token = self.store.get_versioned(self.key)
        except NotFoundError:
            return None
        try:
            return LeaseRecord.from_bytes(raw), token
        except ValueError:
            log.warning("lease %s is unreadable; treating it as free", self.key)
            return None, token

    def try_acquire(self, data: dict[str, Any] | None = None) -> bool:
        """Take the lease if it is absent, released or expired. Never blocks, never overwrites
        a live lease. On success `previous` is the record replaced (None if there was none).
        """
        if self.held:
            return True
        data = dict(data or {})
        now = self.clock()
        new = self._new_record(now, data)
        payload = new.to_bytes()
        self.lost.clear()
        if self.store.put_if_absent(self.key, payload):
            return self._won(new, payload, previous=None)
        current = self._read()
        if current is None:
            # Deleted between our create and our read (by hand, or gc): try creating once more.
            if self.store.put_if_absent(self.key, payload):
                return self._won(new, payload, previous=None)
            return False
        rec, token = current
        if rec is not None and rec.owner == self.owner and rec.nonce == new.nonce:
            # Our create went through but a retried request reported a conflict.
            return self._won(new, payload, previous=None, token=token)
        if rec is not None and not rec.is_free(now):
            self.previous = rec
            return False
        try:
            self.store.put_if_match(self.key, payload, token)
        except ConflictError:
            return False  # another contender swapped first
        return self._won(new, payload, previous=rec)

    def _won(self, rec: LeaseRecord, payload: bytes, *, previous: LeaseRecord | None, token: str | None = None) -> bool:
        if token is None:
            try:
                _, token = self.store.get_versioned(self.key)
            except NotFoundError:
                return False
        self._record, self._token, self.previous = rec, token, previous
        log.debug("lease %s acquired by %s", self.key, self.owner)
        return True

    def acquire(self, *, timeout: float = 0.0, poll: float = 0.5, data: dict[str, Any] | None = None) -> bool:
        """`try_acquire` until it succeeds or `timeout` seconds pass. Returns whether we hold it."""
        deadline = time.monotonic() + timeout
        while True:
            if self.try_acquire(data):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)

    def _swap(self, new: LeaseRecord) -> None:
        """CAS our current version for `new`; LeaseLostError if someone else wrote in between."""
        if self._token is None:
            raise LeaseLostError(f"lease {self.key} is not held by {self.owner}")
        payload = new.to_bytes()
        try:
            self.store.put_if_match(self.key, payload, self._token)
        except ConflictError as e:
            raise LeaseLostError(f"lease {self.key} was taken over by another holder") from e
        _, self._token = self.store.get_versioned(self.key)
        self._record = new

    def renew(self, data: dict[str, Any] | None = None) -> None:
        """Extend the expiry by `ttl` from now. Raises LeaseLostError if it is no longer ours."""
        with self._lock:
            rec = self._record
            if rec is None or self.lost.is_set():
                raise LeaseLostError(f"lease {self.key} is not held by {self.owner}")
            now = self.clock()
            if now >= rec.expires_at:
                # Someone may already have taken it over; even if not, we lost exclusivity.
                self.lost.set()
                raise LeaseLostError(f"lease {self.key} expired before it was renewed")
            new = self._new_record(now, rec.data if data is None else dict(data), acquired_at=rec.acquired_at, nonce=rec.nonce)
            try:
                self._swap(new)
            except LeaseLostError:
                self.lost.set()
                raise

    def release(self, data: dict[str, Any] | None = None) -> None:
        """Stop the heartbeat and free the lease (only if it is still ours). Never raises for a
        lease that was already lost; `data` replaces the record's data if given.
        """
        self.stop_heartbeat()
        with self._lock:
            rec = self._record
            if rec is None:
                return
            now = self.clock()
            freed = LeaseRecord(owner=rec.owner, nonce=rec.nonce, acquired_at=rec.acquired_at, heartbeat_at=now,
                                expires_at=now, ttl=rec.ttl, released=True, data=rec.data if data is None else dict(data))
            try:
                if not self.lost.is_set():
                    self._swap(freed)
            except (LeaseLostError, DataversionError) as e:
                log.warning("could not release lease %s: %s (it expires on its own)", self.key, e)
            finally:
                self._record, self._token = None, None

    def start_heartbeat(self, interval: float | None = None) -> None:
        """Renew every `interval` seconds (default ttl/3) in a daemon thread until release."""
        if self._heartbeat is not None:
            return
        interval = self.ttl / 3 if interval is None else interval
        self._stop_heartbeat.clear()

        def beat() -> None:
            while not self._stop_heartbeat.wait(interval):
                try:
                    self.renew()
                except LeaseLostError as e:
                    log.error("%s", e)
                    return
                except Exception as e:  # noqa: BLE001 - a store hiccup: retry until expiry
                    rec = self._record
                    if rec is None or self.clock() >= rec.expires_at:
                        log.error("lease %s expired: could not renew it (%s)", self.key, e)
                        self.lost.set()
                        return
                    log.warning("lease %s renewal failed, retrying: %s", self.key, e)

        self._heartbeat = threading.Thread(target=beat, name=f"lease-heartbeat-{self.name}", daemon=True)
        self._heartbeat.start()

    def stop_heartbeat(self) -> None:
        self._stop_heartbeat.set()
        t, self._heartbeat = self._heartbeat, None
        if t is not None and t is not threading.current_thread():
            t.join()

    def __enter__(self) -> Lease:
        if not self.try_acquire():
            holder = self.previous.owner if self.previous else "another holder"
            raise ConflictError(f"lease {self.key} is held by {holder}")
        self.start_heartbeat()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
