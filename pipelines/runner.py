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
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import re
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from dataversion import Repo
from dataversion.errors import ConflictError, DataversionError
from dataversion.lease import Lease, default_owner
from dataversion.lifecycle import die_with_parent

from . import run_history as rh

UTC = timezone.utc
log = logging.getLogger("dataversion.runner")

DEFAULT_INGEST = "pipelines.ingest:run_ingest"
INTERVAL_ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)

IngestFn = Callable[..., Any]


# ---------------------------------------------------------------------------- triggers
def make_trigger(*, cron: str | None = None, every: float | None = None):
    """An APScheduler trigger for a 5-field crontab (UTC) or a fixed interval in seconds."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if (cron is None) == (every is None):
        raise ValueError("give exactly one of cron or every")
    if cron is not None:
        fields = cron.split()
        if len(fields) != 5:
            raise ValueError(f"wrong number of fields in crontab {cron!r}; need 5")
        minute, hour, day, month, dow = fields
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=_cron_day_of_week(dow),
            timezone=UTC,
        )
    if every <= 0:
        raise ValueError("the interval must be positive")
    return IntervalTrigger(seconds=every, start_date=INTERVAL_ANCHOR, timezone=UTC)


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _cron_day_of_week(field: str) -> str:
    """Crontab day-of-week (0 or 7 = Sunday) as day names: APScheduler 3 numbers days from
    Monday = 0, so `CronTrigger.from_crontab("0 3 * * 1")` would fire on Tuesdays.
    """
    days: list[int] = []
    for token in field.lower().split(","):
        if not re.fullmatch(r"[\d*/-]+", token):
            return field  # names (mon-fri) already mean the same in both
        rng, _, step = token.partition("/")
        if rng == "*":
            lo, hi = 0, 6
        elif "-" in rng:
            lo, hi = (int(x) for x in rng.split("-", 1))
        else:
            lo = hi = int(rng)
            if step:
                hi = 6
        if not (0 <= lo <= 7 and 0 <= hi <= 7 and lo <= hi):
            raise ValueError(f"bad day of week {field!r}")
        days.extend(d % 7 for d in range(lo, hi + 1, int(step) if step else 1))
    return ",".join(_DAY_NAMES[d] for d in sorted(set(days)))


def latest_slot(trigger, now: datetime, lookback: timedelta = timedelta(days=8)) -> datetime | None:
    """The latest fire time of `trigger` at or before `now` (None if none in `lookback`)."""
    from apscheduler.triggers.interval import IntervalTrigger

    if isinstance(trigger, IntervalTrigger):
        step = trigger.interval.total_seconds()
        n = (now - trigger.start_date).total_seconds() // step
        return trigger.start_date + timedelta(seconds=n * step) if n >= 0 else None
    # Cron: walk forward from the lookback; day-by-day first so yearly crons stay cheap.
    start = now - lookback
    t = trigger.get_next_fire_time(None, start)
    last = None
    while t is not None and t <= now:
        last = t
        t = trigger.get_next_fire_time(t, t + timedelta(microseconds=1))
    return last


# ---------------------------------------------------------------------------- retries
@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per run and exponential backoff between them (seconds)."""

    attempts: int = 3
    backoff: float = 2.0  # first wait; doubles each retry
    max_backoff: float = 60.0


class IngestError(DataversionError):
    """The ingestion failed; `transient` says whether a retry may help."""

    def __init__(self, message: str, *, transient: bool, error_type: str = ""):
        super().__init__(message)
        self.transient = transient
        self.error_type = error_type


class RunAbandoned(DataversionError):
    """The run was stopped (signal or lost lease) before it finished."""


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the whole run may help: a lost compare-and-swap (the branch moved),
    a network or server hiccup. Bad input, bad credentials or broken data are permanent.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ConflictError | ConnectionError | TimeoutError):
            return True
        mod = type(e).__module__ or ""
        if mod.startswith("urllib3"):
            return True
        if type(e).__name__ in ("S3Error", "ServerError") and getattr(e, "code", "") in (
            "SlowDown",
            "InternalError",
            "ServiceUnavailable",
            "RequestTimeout",
        ):
            return True
        e = e.__cause__ or e.__context__
    return False


def resolve_ingest(spec: str | IngestFn) -> IngestFn:
    """A callable from "package.module:function" (or the callable itself)."""
    if callable(spec):
        return spec
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"ingest function {spec!r} is not module:function")
    return getattr(importlib.import_module(module), attr)


def _ingest_child(
    conn, spec, source: str, repo_url: str, branch: str, kwargs: dict[str, Any]
) -> None:
    """Child process body: run the ingestion, send ("ok", report dict) or ("error", info)."""
    os.setsid()  # own process group: abandoning kills Beam's worker processes too
    die_with_parent()  # a SIGKILLed runner must not leave an ingestion running
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop us
    try:
        report = resolve_ingest(spec)(source, repo_url, branch=branch, **kwargs)
        result = report.to_dict() if hasattr(report, "to_dict") else dict(report)
        conn.send(("ok", result))
    except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
        conn.send(
            (
                "error",
                {
                    "type": type(e).__name__,
                    "message": str(e) or type(e).__name__,
                    "transient": is_transient(e),
                    "traceback": traceback.format_exc(),
                },
            )
        )
    finally:
        conn.close()


# ---------------------------------------------------------------------------- metrics
class RunnerMetrics:
    """Prometheus metrics of a runner. Pass a registry in tests; None uses the default."""

    def __init__(self, registry=None):
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        self.registry = registry if registry is not None else REGISTRY
        kw = {"registry": self.registry}
        self.runs = Counter(
            "dataversion_runner_runs", "Runs by final status.", ["branch", "status"], **kw
        )
        self.failures = Counter(
            "dataversion_runner_attempt_failures",
            "Failed ingestion attempts (retried or not).",
            ["branch", "transient"],
            **kw,
        )
        self.records = Counter(
            "dataversion_runner_records",
            "Records by outcome (kept, duplicate, rejected).",
            ["branch", "outcome"],
            **kw,
        )
        self.duration = Histogram(
            "dataversion_runner_run_duration_seconds",
            "Wall time of runs that ran the ingestion.",
            ["branch"],
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, float("inf")),
            **kw,
        )
        self.last_success = Gauge(
            "dataversion_runner_last_success_timestamp_seconds",
            "When the last run succeeded (or found nothing new).",
            ["branch"],
            **kw,
        )
        self.running = Gauge(
            "dataversion_runner_running", "1 while a run holds the lease.", ["branch"], **kw
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from outside the pod
        from prometheus_client import start_http_server

        start_http_server(port, addr=addr, registry=self.registry)

    def observe(self, rec: rh.RunRecord) -> None:
        self.runs.labels(rec.branch, rec.status).inc()
        if (
            rec.status in (rh.SUCCEEDED, rh.NOTHING_NEW, rh.FAILED, rh.ABANDONED)
            and rec.duration_s is not None
        ):
            self.duration.labels(rec.branch).observe(rec.duration_s)
        if rec.status in (rh.SUCCEEDED, rh.NOTHING_NEW):
            self.last_success.labels(rec.branch).set(time.time())
        for outcome, name in (
            ("kept", "kept"),
            ("duplicate", "duplicates"),
            ("rejected", "rejected"),
        ):
            n = rec.counts.get(name) or 0
            if n:
                self.records.labels(rec.branch, outcome).inc(n)


# ---------------------------------------------------------------------------- runner
class PipelineRunner:
    """Runs `ingest(source, repo_url, branch=..., **ingest_kwargs)` on a schedule, one run at
    a time per (repo, branch) across every runner process, with a run history in the store.

    `ingest` is a picklable module-level callable or "module:function" (default: the Beam
    ingestion, `pipelines.ingest:run_ingest`); it runs in a child process and returns an
    object with `to_dict()` (or a dict) holding at least commit, inputs, kept, duplicates,
    rejected, by_modality.
    """

    def __init__(
        self,
        source: str,
        repo_url: str,
        branch: str = "main",
        *,
        ingest: str | IngestFn = DEFAULT_INGEST,
        ingest_kwargs: dict[str, Any] | None = None,
        lease_ttl: float = 60.0,
        retry: RetryPolicy = RetryPolicy(),
        stop_grace: float = 20.0,
        metrics: RunnerMetrics | None = None,
        owner: str | None = None,
    ):
        self.source = source
        self.repo_url = repo_url
        self.branch = branch
        self.ingest = ingest
        self.ingest_kwargs = dict(ingest_kwargs or {})
        self.retry = retry
        self.stop_grace = stop_grace
        self.metrics = metrics
        self.owner = owner or default_owner()
        self.repo = Repo.init(repo_url)  # the lease and the history live in its store
        self.lease = Lease(self.repo.store, branch, ttl=lease_ttl, owner=self.owner)
        self._stop = threading.Event()  # no new runs, no more retries
        self._abandon = threading.Event()  # kill the current ingestion now
        self._idle = threading.Event()
        self._idle.set()
        self._run_lock = threading.Lock()  # one run at a time inside this process too

    # -------------------------------------------------------------- one run
    def run(self, slot: datetime | None = None) -> rh.RunRecord:
        """One run for `slot` (None: unscheduled, e.g. --once). Never raises for a failed run:
        the failure is in the returned (and stored) record.
        """
        with self._run_lock:
            self._idle.clear()
            try:
                return self._run(slot)
            finally:
                self._idle.set()

    def _run(self, slot: datetime | None) -> rh.RunRecord:
        started = datetime.now(UTC)
        t0 = time.monotonic()
        rec = rh.RunRecord(
            run_id=uuid.uuid4().hex[:12],
            branch=self.branch,
            source=self.source,
            status=rh.RUNNING,
            started_at=rh.iso(started),
            slot=rh.iso(slot),
            owner=self.owner,
        )
        history = rh.RunHistoryWriter(self.repo.store, rec, started)
        if self._stop.is_set():
            return rec
        slot_s = rh.iso(slot)
        if not self.lease.try_acquire({"slot": slot_s, "run_id": rec.run_id}):
            held_by = self.lease.previous.owner if self.lease.previous else "another runner"
            return self._finish(
                history,
                rh.SKIPPED_LEASE_HELD,
                t0,
                error=f"lease held by {held_by}",
                final_only=True,
            )
        try:
            prev = self.lease.previous
            prev_slot = prev.data.get("slot") if prev else None
            if slot_s is not None and prev_slot is not None and prev_slot >= slot_s:
                self.lease.release(data=prev.data)
                return self._finish(
                    history,
                    rh.SKIPPED_SLOT_DONE,
                    t0,
                    error=f"slot {slot_s} already run",
                    final_only=True,
                )
            self.lease.start_heartbeat()
            if self.metrics:
                self.metrics.running.labels(self.branch).set(1)
            history.start()
            try:
                report = self._ingest_with_retries(rec)
            except RunAbandoned as e:
                return self._finish(history, rh.ABANDONED, t0, error=str(e))
            except IngestError as e:
                return self._finish(
                    history, rh.FAILED, t0, error=f"{e.error_type}: {e}" if e.error_type else str(e)
                )
            except Exception as e:  # noqa: BLE001 - recorded; the schedule goes on
                log.exception("run %s failed", rec.run_id)
                return self._finish(history, rh.FAILED, t0, error=f"{type(e).__name__}: {e}")
            rec.commit = report.get("commit")
            rec.parent = report.get("parent")
            rec.counts = {
                k: report[k]
                for k in ("objects", "inputs", "kept", "duplicates", "rejected", "by_modality")
                if k in report
            }
            return self._finish(history, rh.SUCCEEDED if rec.commit else rh.NOTHING_NEW, t0)
        finally:
            if self.metrics:
                self.metrics.running.labels(self.branch).set(0)
            self.lease.release()

    def _finish(
        self,
        history: rh.RunHistoryWriter,
        status: str,
        t0: float,
        *,
        error: str | None = None,
        final_only: bool = False,
    ) -> rh.RunRecord:
        rec = history.record
        rec.status, rec.error = status, error
        rec.ended_at = rh.iso(datetime.now(UTC))
        rec.duration_s = round(time.monotonic() - t0, 3)
        try:
            history.write_final() if final_only else history.finish()
        except DataversionError as e:
            log.error("could not record run %s: %s", rec.run_id, e)
        if self.metrics:
            self.metrics.observe(rec)
        level = logging.WARNING if status in (rh.FAILED, rh.ABANDONED) else logging.INFO
        log.log(
            level,
            "run %s %s%s%s",
            rec.run_id,
            status,
            f" commit {rec.commit}" if rec.commit else "",
            f": {error}" if error else "",
        )
        return rec

    def _ingest_with_retries(self, rec: rh.RunRecord) -> dict[str, Any]:
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

        def transient(e: BaseException) -> bool:
            return isinstance(e, IngestError) and e.transient and not self._stop.is_set()

        retrying = Retrying(
            stop=stop_after_attempt(max(1, self.retry.attempts)),
            wait=wait_exponential(multiplier=self.retry.backoff, max=self.retry.max_backoff),
            retry=retry_if_exception(transient),
            sleep=lambda s: self._stop.wait(s),  # a stop request cuts the backoff short
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                rec.attempts = attempt.retry_state.attempt_number
                if self._stop.is_set() and rec.attempts > 1:
                    raise RunAbandoned("stopped between retries")
                try:
                    return self._ingest_once()
                except IngestError as e:
                    if self.metrics:
                        self.metrics.failures.labels(self.branch, str(e.transient).lower()).inc()
                    log.warning(
                        "attempt %d of run %s failed (%s): %s",
                        rec.attempts,
                        rec.run_id,
                        "transient" if e.transient else "permanent",
                        e,
                    )
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _ingest_once(self) -> dict[str, Any]:
        """Run the ingestion in a child process; kill it if the run is abandoned."""
        ctx = multiprocessing.get_context("spawn")
        recv, send = ctx.Pipe(duplex=False)
        child = ctx.Process(
            target=_ingest_child,
            name=f"ingest-{self.branch}",
            daemon=False,
            args=(send, self.ingest, self.source, self.repo_url, self.branch, self.ingest_kwargs),
        )
        child.start()
        send.close()
        result = None
        reason = None
        try:
            while True:
                if recv.poll(0.1):
                    try:
                        result = recv.recv()
                    except EOFError:
                        result = None
                    break
                if not child.is_alive():
                    break
                if self._abandon.is_set():
                    reason = "stopped by a signal before the run finished"
                elif self.lease.lost.is_set():
                    reason = "the lease was lost (expired or taken over) during the run"
                if reason:
                    break
        finally:
            if reason or result is None:
                self._kill(child)
            child.join()
            recv.close()
        if reason:
            raise RunAbandoned(reason + "; the ingestion was killed before committing")
        if result is None:
            raise IngestError(
                f"the ingestion process died (exit code {child.exitcode})",
                transient=True,
                error_type="ProcessDied",
            )
        kind, payload = result
        if kind == "ok":
            return payload
        raise IngestError(
            payload["message"], transient=payload["transient"], error_type=payload["type"]
        )

    @staticmethod
    def _kill(child) -> None:
        if child.pid is None:
            return
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            child.kill()

    # -------------------------------------------------------------- scheduling
    def request_stop(self) -> None:
        """Stop scheduling; the current run may finish within `stop_grace` (signal-safe)."""
        self._stop.set()

    def _scheduled_run(self, trigger) -> None:
        self.run(latest_slot(trigger, datetime.now(UTC)))

    def serve(
        self,
        trigger=None,
        *,
        once: bool = False,
        install_signals: bool = True,
        metrics_port: int | None = None,
    ) -> int:
        """Run on `trigger` until SIGTERM/SIGINT (or `request_stop()`); with `once`, run one
        slot (the latest of `trigger`, if given) and return. Returns the exit code: 0, or 1
        when a `once` run failed.
        """
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda signum, frame: self.request_stop())
        if metrics_port is not None:
            if self.metrics is None:
                self.metrics = RunnerMetrics()
            self.metrics.serve(metrics_port)
        result: list[rh.RunRecord] = []
        if once:
            slot = latest_slot(trigger, datetime.now(UTC)) if trigger is not None else None
            worker = threading.Thread(target=lambda: result.append(self.run(slot)), name="run-once")
            worker.start()
            while worker.is_alive() and not self._stop.is_set():
                worker.join(0.1)
            self._wind_down()
            worker.join()
            return 1 if result and result[0].status == rh.FAILED else 0
        if trigger is None:
            raise ValueError("a trigger is needed unless once=True")
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(timezone=UTC)
        job_kwargs: dict[str, Any] = {}
        missed = self._missed_slot(trigger)
        if missed:
            job_kwargs["next_run_time"] = datetime.now(UTC)  # catch up once, now
            log.info("slot %s was not run; running once now", rh.iso(missed))
        scheduler.add_job(
            self._scheduled_run,
            trigger,
            args=(trigger,),
            id=f"ingest:{self.branch}",
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
            **job_kwargs,
        )
        scheduler.start()
        log.info(
            "runner %s: %s -> %s branch %s on %s",
            self.owner,
            self.source,
            self.repo_url,
            self.branch,
            trigger,
        )
        try:
            while not self._stop.wait(0.2):
                pass
        finally:
            scheduler.shutdown(wait=False)
            self._wind_down()
        return 0

    def _missed_slot(self, trigger) -> datetime | None:
        """The latest slot before now, if no runner has run it (from the lease's record)."""
        from dataversion.lease import read_lease

        slot = latest_slot(trigger, datetime.now(UTC))
        if slot is None:
            return None
        rec = read_lease(self.repo.store, self.branch)
        last = rec.data.get("slot") if rec else None
        if (
            last is None
            and rec is None
            and not any(True for _ in self.repo.store.list(f"{rh.RUNS_PREFIX}{self.branch}/"))
        ):
            return None  # a brand-new schedule: start with the next slot
        return slot if last is None or last < rh.iso(slot) else None

    def _wind_down(self) -> None:
        """After a stop request: let the current run finish for `stop_grace` s, then abandon it."""
        self._stop.set()
        if not self._idle.wait(self.stop_grace):
            log.warning("stopping: abandoning the current run (no partial commit)")
            self._abandon.set()
            self._idle.wait(30)
        self.lease.release()
