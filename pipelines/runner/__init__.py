"""The scheduled pipeline runner: incremental ingestion on a cron or a fixed interval.

Each run:  take the branch lease -> run the ingestion (retried with backoff on transient
errors) -> record the run in the history -> release the lease.

Scheduling (APScheduler 3.x, `BackgroundScheduler`, in-memory job store):
- `--cron` is a 5-field crontab in UTC (a `CronTrigger`, days of week as cron numbers them); `--every` uses an `IntervalTrigger`
  anchored at 2000-01-01T00:00Z, so every runner with the same interval shares the same
  slots (every 30 s: :00 and :30) and the lease decides which one runs each slot.
- One job per runner (id `ingest:<branch>`, `replace_existing=True`), `max_instances=1`
  (a run that overruns makes the next slots wait, never overlap), `coalesce=True` and
  `misfire_grace_time=None`: however late the scheduler wakes up (a suspended process, a
  long run), the slots it missed are run once, not once each.
- Across restarts: APScheduler keeps nothing, but the lease records the last slot run
  on this branch. A runner that starts after missing slots (down for 3 slots) runs once at
  start-up for the latest missed slot, then follows the schedule.
- Slots are deduplicated across runners: a run acquires the lease (compare-and-swap) and
  reads, atomically with it, the slot the previous holder ran; if that slot is this one or
  later, the run is recorded as "skipped-slot-done". Two runners -> one run per slot.

Each run's ingestion executes in a child process (spawned, in its own process group, dying
with its parent): SIGTERM/SIGINT stop the schedule, wait `stop_grace` seconds for the run
to finish, then kill the child. The ingestion commits with a compare-and-swap as its last
step, so an abandoned run leaves no partial commit; the run is recorded as "abandoned", the
lease is released and the process exits 0.

    triggers.py   make_trigger, latest_slot: the schedule and its slots
    attempt.py    run_attempt: one ingestion in a child process; IngestError, RunAbandoned
    service.py    PipelineRunner (one run: lease, retries, history; serve: the schedule)
    metrics.py    RunnerMetrics (Prometheus)
    ../run_history.py  the run records in the store
"""

from .attempt import IngestError, RunAbandoned, is_transient, resolve_ingest, run_attempt
from .metrics import RunnerMetrics
from .service import DEFAULT_INGEST, PipelineRunner, RetryPolicy
from .triggers import INTERVAL_ANCHOR, UTC, latest_slot, make_trigger

__all__ = [
    "DEFAULT_INGEST",
    "INTERVAL_ANCHOR",
    "UTC",
    "IngestError",
    "PipelineRunner",
    "RetryPolicy",
    "RunAbandoned",
    "RunnerMetrics",
    "is_transient",
    "latest_slot",
    "make_trigger",
    "resolve_ingest",
    "run_attempt",
]
