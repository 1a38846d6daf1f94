"""Run history of the scheduled pipeline runner, kept in the repository's store.

One JSON object per run: `runs/<branch>/<start>-<run id>.json`, where <start> is the UTC
start time as YYYYMMDDTHHMMSS.ffffffZ, so keys sort by start time. A run writes its record
when it starts (status "running", `put_if_absent`) and replaces it when it ends
(`put_if_match` on that version); a runner killed mid-run leaves "running", which
`list_runs` reports as "abandoned" once the branch lease no longer belongs to that run.
Skipped slots are written once, at the end.

Imports only the dataversion core: `dataversion runs` needs neither Beam nor APScheduler.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from dataversion.errors import ConflictError, NotFoundError
from dataversion.lease import read_lease
from dataversion.refs import validate_ref_name
from dataversion.stores.base import Store

UTC = timezone.utc
RUNS_PREFIX = "runs/"

# Final statuses. "running" is only seen while a run is in flight (or was killed).
SUCCEEDED = "succeeded"  # a new commit
NOTHING_NEW = "nothing-new"  # ran, no new raw objects, no commit
FAILED = "failed"  # still failing after retries (error says why); the schedule goes on
SKIPPED_LEASE_HELD = "skipped-lease-held"  # another run held the branch lease
SKIPPED_SLOT_DONE = "skipped-slot-done"  # another runner already ran this schedule slot
ABANDONED = "abandoned"  # stopped by SIGTERM/SIGINT (or killed) before committing
RUNNING = "running"
STATUSES = (
    SUCCEEDED,
    NOTHING_NEW,
    FAILED,
    SKIPPED_LEASE_HELD,
    SKIPPED_SLOT_DONE,
    ABANDONED,
    RUNNING,
)

_KEY_TIME = "%Y%m%dT%H%M%S.%fZ"


def iso(t: datetime | None) -> str | None:
    """UTC ISO-8601 with microseconds and a Z: sorts as text in time order."""
    return None if t is None else t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class RunRecord:
    """One run of the scheduler, as stored."""

    run_id: str
    branch: str
    source: str
    status: str
    started_at: str
    ended_at: str | None = None
    duration_s: float | None = None
    slot: str | None = None  # the schedule slot (fire time) this run served; None for --once
    commit: str | None = None
    parent: str | None = None
    counts: dict[str, Any] = field(
        default_factory=dict
    )  # inputs, kept, duplicates, rejected, by_modality, objects
    error: str | None = None
    attempts: int = 0
    owner: str = ""  # the runner process (host:pid:random), as in the lease

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, indent=1).encode()


def run_key(branch: str, started: datetime, run_id: str) -> str:
    """The store key of a run's record."""
    validate_ref_name(branch)
    return f"{RUNS_PREFIX}{branch}/{started.astimezone(UTC).strftime(_KEY_TIME)}-{run_id}.json"


class RunHistoryWriter:
    """Writes one run's record: `start()` then `finish()`, or `write_final()` for skips."""

    def __init__(self, store: Store, record: RunRecord, started: datetime):
        self.store = store
        self.record = record
        self.key = run_key(record.branch, started, record.run_id)
        self._token: str | None = None

    def start(self) -> None:
        if not self.store.put_if_absent(self.key, self.record.to_bytes()):
            raise ConflictError(f"run record {self.key} already exists")
        _, self._token = self.store.get_versioned(self.key)

    def finish(self) -> None:
        data = self.record.to_bytes()
        if self._token is None:
            self.write_final()
            return
        try:
            self.store.put_if_match(self.key, data, self._token)
        except ConflictError:
            # Only our own run writes this key; a lost CAS means a retried request landed.
            _, self._token = self.store.get_versioned(self.key)
            self.store.put_if_match(self.key, data, self._token)

    def write_final(self) -> None:
        self.store.put_if_absent(self.key, self.record.to_bytes())


def list_runs(store: Store, branch: str | None = None, limit: int | None = None) -> list[RunRecord]:
    """Run records, newest first (all branches unless `branch`), at most `limit`.

    A "running" record whose run no longer holds its branch lease (the runner was killed)
    is reported as "abandoned".
    """
    prefix = RUNS_PREFIX + (f"{validate_ref_name(branch)}/" if branch else "")
    keys = sorted(
        (i.key for i in store.list(prefix) if i.key.endswith(".json")),
        key=lambda k: k.rsplit("/", 1)[-1],
        reverse=True,
    )
    if limit is not None:
        keys = keys[:limit]
    records: list[RunRecord] = []
    leases: dict[str, Any] = {}
    for key in keys:
        try:
            rec = RunRecord.from_dict(json.loads(store.get(key)))
        except (NotFoundError, ValueError, TypeError):
            continue
        if rec.status == RUNNING:
            if rec.branch not in leases:
                leases[rec.branch] = read_lease(store, rec.branch)
            lease = leases[rec.branch]
            now = datetime.now(UTC).timestamp()
            live = (
                lease is not None
                and not lease.is_free(now)
                and lease.owner == rec.owner
                and lease.data.get("run_id") == rec.run_id
            )
            if not live:
                rec.status = ABANDONED
                rec.error = rec.error or "the runner stopped before the run ended (killed?)"
        records.append(rec)
    return records
