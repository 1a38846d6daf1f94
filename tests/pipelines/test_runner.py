"""The scheduled runner: real runner processes, real stores (file and the S3 server).

Scheduling, lease and history tests inject `runner_fakes.add_files` (a `repo.add` of a
local directory) to stay fast; the end-to-end tests run the real Beam ingestion.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from dataversion import Repo
from dataversion.errors import NotFoundError
from dataversion.lease import Lease, read_lease
from pipelines import run_history as rh
from pipelines.cli.runner import parse_duration
from pipelines.runner import PipelineRunner, RetryPolicy, RunnerMetrics, latest_slot, make_trigger

UTC = timezone.utc
HERE = Path(__file__).parent
ROOT = HERE.parent.parent
FAKE = "runner_fakes:add_files"


def write_docs(root: Path, names: list[str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / f"{name}.txt").write_text(f"document {name}: " + " ".join(f"w{name}{i}" for i in range(30)))


def runs_of(url: str, branch: str = "main") -> list[rh.RunRecord]:
    """The branch's run records, oldest first ([] before the runner created the repo)."""
    try:
        store = Repo.open(url).store
    except NotFoundError:
        return []
    return list(reversed(rh.list_runs(store, branch)))


def wait_for(pred, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def start_runner(source, url, *args: str, env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]), **(env or {})}
    out = open(log, "wb") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "dataversion", "runner", str(source), "--repo", url, *args],
                            cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout)


@pytest.fixture
def fake_env(tmp_path, monkeypatch):
    state = tmp_path / "fake-state"
    monkeypatch.setenv("FAKE_STATE_DIR", str(state))
    monkeypatch.syspath_prepend(str(HERE))  # spawned children import runner_fakes too
    for name in ("FAKE_SLEEP", "FAKE_FAIL_FIRST", "FAKE_FAIL_KIND"):
        monkeypatch.delenv(name, raising=False)
    return state


# ---------------------------------------------------------------------------- pure parts
def test_durations_and_slots():
    assert parse_duration("30s") == 30 and parse_duration("15m") == 900 and parse_duration("500ms") == 0.5
    assert parse_duration("2") == 2 and parse_duration("1h") == 3600
    every = make_trigger(every=30)
    now = datetime(2030, 5, 1, 12, 0, 47, tzinfo=UTC)
    assert latest_slot(every, now) == datetime(2030, 5, 1, 12, 0, 30, tzinfo=UTC)
    assert latest_slot(every, datetime(2030, 5, 1, 12, 1, 0, tzinfo=UTC)) == datetime(2030, 5, 1, 12, 1, 0, tzinfo=UTC)
    cron = make_trigger(cron="*/15 * * * *")
    assert latest_slot(cron, now) == datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
    assert latest_slot(make_trigger(cron="0 3 * * 1"), now) == datetime(2030, 4, 29, 3, 0, tzinfo=UTC)
    assert latest_slot(make_trigger(cron="0 3 * * 0"), now) == datetime(2030, 4, 28, 3, 0, tzinfo=UTC)  # Sunday
    assert latest_slot(make_trigger(cron="0 3 * * 1-5"), now) == datetime(2030, 5, 1, 3, 0, tzinfo=UTC)
    assert latest_slot(make_trigger(cron="0 3 * * 6,7"), now) == datetime(2030, 4, 28, 3, 0, tzinfo=UTC)
    with pytest.raises(ValueError):
        make_trigger(cron="* * *")


# ---------------------------------------------------------------------------- in-process
@pytest.mark.parametrize("kind", ["file", pytest.param("s3", marks=pytest.mark.s3)])
def test_history_records_success_failure_and_retries(kind, tmp_path, fake_env, monkeypatch, request):
    url = "file://" + str(tmp_path / "repo") if kind == "file" else request.getfixturevalue("s3_repo_url")
    raw = tmp_path / "raw"
    write_docs(raw, ["a", "b"])
    registry = CollectorRegistry()
    metrics = RunnerMetrics(registry)
    runner = PipelineRunner(str(raw), url, ingest=FAKE, lease_ttl=5, retry=RetryPolicy(attempts=3, backoff=0.05),
                            metrics=metrics)
    # Importing feast (another test module) sets PROMETHEUS_MULTIPROC_DIR, after which
    # prometheus_client shares values between registries of one process: compare deltas,
    # reading "before" once each labelled child exists (creating it loads the shared value).
    metrics.runs.labels("main", "failed")
    metrics.failures.labels("main", "true")
    metrics.records.labels("main", "kept")
    checked = [
        ("dataversion_runner_runs_total", {"branch": "main", "status": "failed"}),
        ("dataversion_runner_attempt_failures_total", {"branch": "main", "transient": "true"}),
        ("dataversion_runner_records_total", {"branch": "main", "outcome": "kept"}),
    ]
    before = {name + str(labels): registry.get_sample_value(name, labels) or 0 for name, labels in checked}
    # Call 1 fails transiently and is retried: one run, two attempts.
    monkeypatch.setenv("FAKE_FAIL_FIRST", "1")
    monkeypatch.setenv("FAKE_FAIL_KIND", "transient")
    first = runner.run()
    assert first.status == rh.SUCCEEDED and first.attempts == 2 and first.counts["kept"] == 2 and first.commit
    assert runner.run().status == rh.NOTHING_NEW
    # Calls 3..5 fail permanently: recorded once, not retried.
    monkeypatch.setenv("FAKE_FAIL_FIRST", "5")
    monkeypatch.setenv("FAKE_FAIL_KIND", "permanent")
    failed = runner.run()
    assert failed.status == rh.FAILED and failed.attempts == 1 and "fake permanent failure" in failed.error
    history = runs_of(url)
    assert [r.status for r in history] == [rh.SUCCEEDED, rh.NOTHING_NEW, rh.FAILED]
    assert history[0].commit == Repo.open(url).branch_tip("main") and history[0].started_at <= history[0].ended_at
    assert history[2].error and history[2].commit is None
    assert read_lease(Repo.open(url).store, "main").released
    delta = {name + str(labels): registry.get_sample_value(name, labels) - before[name + str(labels)] for name, labels in checked}
    assert list(delta.values()) == [1, 1, 2], delta


def test_a_failed_run_does_not_stop_the_schedule(tmp_path, fake_env, monkeypatch):
    url = "file://" + str(tmp_path / "repo")
    raw = tmp_path / "raw"
    write_docs(raw, ["a"])
    monkeypatch.setenv("FAKE_FAIL_FIRST", "1")
    runner = PipelineRunner(str(raw), url, ingest=FAKE, lease_ttl=5, retry=RetryPolicy(attempts=1))
    t = threading.Thread(target=runner.serve, args=(make_trigger(every=0.5),), kwargs={"install_signals": False})
    t.start()
    try:
        wait_for(lambda: [r.status for r in runs_of(url)][:2] == [rh.FAILED, rh.SUCCEEDED], 20, "a failure then a success")
    finally:
        runner.request_stop()
        t.join(30)
    assert not t.is_alive()
    slots = [r.slot for r in runs_of(url)]
    assert all(slots) and len(set(slots)) == len(slots)  # one run per slot


def test_a_runner_down_for_three_slots_runs_once(tmp_path, fake_env):
    url = "file://" + str(tmp_path / "repo")
    raw = tmp_path / "raw"
    write_docs(raw, ["a"])
    trigger = make_trigger(every=2)
    now = datetime.now(UTC)
    if (now - latest_slot(trigger, now)).total_seconds() > 1.2:  # keep clear of the next slot
        time.sleep(2 - (now - latest_slot(trigger, now)).total_seconds() + 0.05)
    missed = latest_slot(trigger, datetime.now(UTC))
    # The last run recorded on the lease served a slot three slots ago.
    repo = Repo.init(url)
    old = Lease(repo.store, "main", ttl=5, owner="old")
    assert old.try_acquire({"slot": rh.iso(missed - timedelta(seconds=6))})
    old.release()
    runner = PipelineRunner(str(raw), url, ingest=FAKE, lease_ttl=5)
    t = threading.Thread(target=runner.serve, args=(trigger,), kwargs={"install_signals": False})
    t.start()
    try:
        wait_for(lambda: runs_of(url), 10, "the catch-up run")
        time.sleep(0.3)
    finally:
        runner.request_stop()
        t.join(30)
    history = runs_of(url)
    assert history[0].slot == rh.iso(missed) and history[0].status == rh.SUCCEEDED
    assert len([r for r in history if r.slot == rh.iso(missed)]) == 1


# ---------------------------------------------------------------------------- real processes
@pytest.mark.parametrize("kind", ["file", pytest.param("s3", marks=pytest.mark.s3)])
def test_two_runner_processes_one_run_per_slot(kind, tmp_path, fake_env, request):
    url = "file://" + str(tmp_path / "repo") if kind == "file" else request.getfixturevalue("s3_repo_url")
    raw = tmp_path / "raw"
    write_docs(raw, ["a", "b"])
    Repo.init(url)
    args = ("--every", "1s", "--lease-ttl", "3s", "--ingest-fn", FAKE)
    env = {"FAKE_SLEEP": "0.3"}
    procs = [start_runner(raw, url, *args, env=env, log=tmp_path / f"runner{i}.log") for i in range(2)]
    try:
        wait_for(lambda: len({r.slot for r in runs_of(url) if r.status in (rh.SUCCEEDED, rh.NOTHING_NEW)}) >= 3,
                 40, "three slots run")
    finally:
        codes = [stop(p) for p in procs]
    assert codes == [0, 0], [(tmp_path / f"runner{i}.log").read_text()[-2000:] for i in range(2)]
    history = runs_of(url)
    ran = [r for r in history if r.status not in (rh.SKIPPED_LEASE_HELD, rh.SKIPPED_SLOT_DONE)]
    assert all(r.status in (rh.SUCCEEDED, rh.NOTHING_NEW) for r in ran), [r.to_dict() for r in ran]
    assert len({r.slot for r in ran}) == len(ran), "a slot ran twice"
    assert any(r.status in (rh.SKIPPED_LEASE_HELD, rh.SKIPPED_SLOT_DONE) for r in history)  # they did contend
    spans = sorted((r.started_at, r.ended_at) for r in ran)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), "runs overlapped"
    assert len([r for r in ran if r.status == rh.SUCCEEDED]) == 1  # then incremental: nothing new
    assert read_lease(Repo.open(url).store, "main").released


@pytest.mark.parametrize("kind", ["file", pytest.param("s3", marks=pytest.mark.s3)])
def test_killed_runner_lease_expires_and_another_takes_over(kind, tmp_path, fake_env, request):
    url = "file://" + str(tmp_path / "repo") if kind == "file" else request.getfixturevalue("s3_repo_url")
    raw = tmp_path / "raw"
    write_docs(raw, ["a"])
    victim = start_runner(raw, url, "--once", "--lease-ttl", "1.5s", "--ingest-fn", FAKE, env={"FAKE_SLEEP": "60"})
    try:
        wait_for(lambda: (fake_env / "calls.log").exists(), 20, "the victim's ingestion to start")
        assert [r.status for r in runs_of(url)] == [rh.RUNNING]
        child_pid = json.loads((fake_env / "calls.log").read_text().splitlines()[0])["pid"]
        victim.kill()
        victim.wait()
        killed = time.time()
        # The ingestion child dies with its runner (no orphan still running to commit later).
        wait_for(lambda: not Path(f"/proc/{child_pid}").exists() or "Z" in Path(f"/proc/{child_pid}/stat").read_text().split()[2],
                 5, "the orphaned ingestion to die")
        assert not read_lease(Repo.open(url).store, "main").released
        heir = start_runner(raw, url, "--every", "0.25s", "--lease-ttl", "1.5s", "--ingest-fn", FAKE, log=tmp_path / "heir.log")
        try:
            done = wait_for(lambda: [r for r in runs_of(url) if r.status == rh.SUCCEEDED], 30, "the takeover run")
        finally:
            assert stop(heir) == 0
    finally:
        if victim.poll() is None:
            victim.kill()
    history = runs_of(url)
    assert history[0].status == rh.ABANDONED and "killed" in history[0].error
    assert datetime.fromisoformat(done[0].started_at).timestamp() >= killed - 1.5  # not before the lease expired
    assert done[0].counts["kept"] == 1


def test_sigterm_finishes_the_current_run_within_grace_and_exits_0(tmp_path, fake_env):
    url = "file://" + str(tmp_path / "repo")
    raw = tmp_path / "raw"
    write_docs(raw, ["a"])
    proc = start_runner(raw, url, "--once", "--stop-grace", "20s", "--ingest-fn", FAKE, env={"FAKE_SLEEP": "1"})
    wait_for(lambda: (fake_env / "calls.log").exists(), 20, "the run to start")
    assert stop(proc) == 0
    (run,) = runs_of(url)
    assert run.status == rh.SUCCEEDED and run.commit == Repo.open(url).branch_tip("main")
    assert read_lease(Repo.open(url).store, "main").released


# ---------------------------------------------------------------------------- with the real ingestion
@pytest.mark.parametrize("kind", ["file", pytest.param("s3", marks=pytest.mark.s3)])
def test_scheduled_runs_ingest_new_files(kind, tmp_path, request):
    url = "file://" + str(tmp_path / "repo") if kind == "file" else request.getfixturevalue("s3_repo_url")
    raw = tmp_path / "raw"
    write_docs(raw, ["a", "b", "c"])
    port = None
    args = ["--every", "1s", "--lease-ttl", "10s"]
    if kind == "file":
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        args += ["--metrics-port", str(port)]
    proc = start_runner(raw, url, *args, log=tmp_path / "runner.log")
    try:
        first = wait_for(lambda: [r for r in runs_of(url) if r.status == rh.SUCCEEDED], 90, "the first ingestion")[0]
        assert first.counts["kept"] == 3 and first.counts["inputs"] == 3 and first.counts["by_modality"] == {"text": 3}
        write_docs(raw, ["d"])
        second = wait_for(lambda: [r for r in runs_of(url) if r.status == rh.SUCCEEDED][1:], 90, "the second ingestion")[0]
        assert second.counts["kept"] == 1 and second.commit != first.commit
        wait_for(lambda: [r for r in runs_of(url) if r.status == rh.NOTHING_NEW], 60, "a run with nothing new")
        if port:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            assert 'dataversion_runner_runs_total{branch="main",status="succeeded"} 2.0' in text
            assert 'dataversion_runner_records_total{branch="main",outcome="kept"} 4.0' in text
            assert "dataversion_runner_run_duration_seconds_count" in text
    finally:
        code = stop(proc, timeout=60)
    assert code == 0, (tmp_path / "runner.log").read_text()[-3000:]
    repo = Repo.open(url)
    assert repo.branch_tip("main") == second.commit and [c["id"] for c in repo.log("main")][:2] == [second.commit, first.commit]
    assert read_lease(repo.store, "main").released
    # `dataversion runs --json` shows the same history.
    out = subprocess.run([sys.executable, "-m", "dataversion", "runs", "--repo", url, "--json", "-n", "0"],
                         cwd=ROOT, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    listed = json.loads(out.stdout)
    assert [r["run_id"] for r in listed] == [r.run_id for r in reversed(runs_of(url))]
    assert {r["status"] for r in listed} >= {rh.SUCCEEDED, rh.NOTHING_NEW}


def test_sigterm_abandons_a_real_ingestion_without_partial_commit(tmp_path):
    url = "file://" + str(tmp_path / "repo")
    raw = tmp_path / "raw"
    write_docs(raw, [f"doc{i}" for i in range(4000)])
    proc = start_runner(raw, url, "--once", "--stop-grace", "0s", log=tmp_path / "runner.log")
    wait_for(lambda: runs_of(url), 30, "the run to start")
    # the child's ingest holds an in-flight marker from before the pipeline writes anything
    # until after its commit: stop the runner while it is there (no sleep as a guess)
    wait_for(lambda: any(Repo.open(url).store.list("inflight/")), 60, "the ingest to be in flight")
    t0 = time.monotonic()
    assert stop(proc) == 0, (tmp_path / "runner.log").read_text()[-3000:]
    assert time.monotonic() - t0 < 10
    (run,) = runs_of(url)
    assert run.status == rh.ABANDONED and run.commit is None, run.to_dict()
    repo = Repo.open(url)
    assert repo.branch_tip("main") is None
    assert not list(repo.store.list("commits/")) and not list(repo.store.list("refs/"))
    assert read_lease(repo.store, "main").released
