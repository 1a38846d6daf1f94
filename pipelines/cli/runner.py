"""`dataversion runner` and `dataversion runs`: thin click shells over `pipelines.runner`
and `pipelines.run_history`.

Entry points "dataversion.commands": `runner` needs the runner extra (APScheduler,
prometheus_client) and the pipelines one (Beam, for the default ingest); `runs` only the
core. Only click and the dataversion core are imported here; those load when a command runs.
"""

from __future__ import annotations

import logging
import sys

import click

from dataversion.cli.support import (
    DataversionCommand,
    emit_json,
    json_option,
    parse_duration,
    repo_options,
)
from dataversion.errors import BadInputError

from .options import check_source_is_a_directory, config_option, read_ingest_config

__all__ = ["runner_command", "runs_command", "parse_duration"]


@click.command("runner", cls=DataversionCommand, context_settings={"ignore_unknown_options": False})
@click.argument("source")
@click.argument("beam_args", nargs=-1, type=click.UNPROCESSED)
@repo_options
@click.option("--branch", default="main", show_default=True)
@click.option("--cron", default=None, help='5-field crontab in UTC, e.g. "*/15 * * * *".')
@click.option(
    "--every", default=None, help="Fixed interval, e.g. 30s, 15m (slots aligned on the clock)."
)
@click.option(
    "--once",
    is_flag=True,
    help="Run one slot now and exit (for a Kubernetes CronJob); exit 1 if it failed.",
)
@click.option(
    "--metrics-port", type=int, default=None, help="Serve Prometheus metrics on this port."
)
@click.option(
    "--lease-ttl",
    default="60s",
    show_default=True,
    help="Lease expiry without heartbeat: how long a killed runner blocks others.",
)
@click.option(
    "--retries",
    type=int,
    default=3,
    show_default=True,
    help="Attempts per run on transient errors.",
)
@click.option(
    "--backoff",
    default="2s",
    show_default=True,
    help="First wait between attempts (doubles each time).",
)
@click.option(
    "--stop-grace",
    default="20s",
    show_default=True,
    help="On SIGTERM/SIGINT, how long the current run may finish before it is abandoned.",
)
@config_option
@click.option(
    "--ingest-fn",
    default="pipelines.ingest:run_ingest",
    hidden=True,
    help="module:function to run (tests, custom pipelines).",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
)
def runner_command(
    source,
    beam_args,
    repo,
    branch,
    cron,
    every,
    once,
    metrics_port,
    lease_ttl,
    retries,
    backoff,
    stop_grace,
    config_file,
    ingest_fn,
    log_level,
):
    """Run the ingestion of SOURCE into --repo on a schedule, one run at a time per branch.

    Each run takes the branch lease, ingests only new objects (no commit if nothing is new),
    records the run (`dataversion runs`) and releases the lease. SIGTERM/SIGINT: the current
    run finishes within --stop-grace or is abandoned without a partial commit; exit 0.
    Beam pipeline options go after `--`, e.g. `-- --runner=FlinkRunner --flink_master=host:8081`.
    """
    logging.basicConfig(
        level=getattr(logging, log_level),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    check_source_is_a_directory(source)
    url = repo.url_for_workers()
    if not once and (cron is None) == (every is None):
        raise BadInputError(
            "give one of --cron or --every", hint='e.g. --cron "*/15 * * * *" or --every 30s'
        )
    if cron is not None and every is not None:
        raise BadInputError("give --cron or --every, not both")
    from ..runner import PipelineRunner, RetryPolicy, make_trigger

    try:
        trigger = (
            make_trigger(cron=cron, every=parse_duration(every) if every else None)
            if (cron or every)
            else None
        )
    except ValueError as e:
        raise BadInputError(f"bad schedule: {e}") from e
    kwargs: dict = {}
    if beam_args:
        kwargs["beam_args"] = tuple(beam_args)
    if config_file:
        kwargs["config"] = read_ingest_config(config_file)
    runner = PipelineRunner(
        source,
        url,
        branch,
        ingest=ingest_fn,
        ingest_kwargs=kwargs,
        lease_ttl=parse_duration(lease_ttl),
        retry=RetryPolicy(attempts=retries, backoff=parse_duration(backoff)),
        stop_grace=parse_duration(stop_grace, allow_zero=True),
    )
    code = runner.serve(trigger, once=once, metrics_port=metrics_port)
    sys.exit(code)


def _row(r) -> str:
    c = r.counts
    counts = (
        f"kept {c.get('kept', 0)} dup {c.get('duplicates', 0)} rej {c.get('rejected', 0)}"
        if c
        else ""
    )
    commit = (r.commit or "")[:12]
    tail = r.error or ""
    return f"{r.started_at[:19]}  {r.branch:<10} {r.status:<18} {r.duration_s if r.duration_s is not None else '':>8}  {commit:<12}  {counts}  {tail}".rstrip()


@click.command("runs", cls=DataversionCommand)
@repo_options
@click.option("--branch", default=None, help="Only this branch (default: all).")
@click.option(
    "-n",
    "limit",
    type=int,
    default=20,
    show_default=True,
    help="At most this many runs, newest first (0: all).",
)
@json_option
def runs_command(repo, branch, limit, as_json):
    """The scheduled runner's run history, newest first.

    --json prints the run records as a list.
    """
    from ..run_history import list_runs

    if limit < 0:
        raise BadInputError(f"-n must be 0 (all) or more, got {limit}", hint="`dataversion runs -n 20` shows the last 20 runs")
    records = list_runs(repo.open().store, branch, limit or None)
    if as_json:
        return emit_json([r.to_dict() for r in records])
    if not records:
        click.echo("no runs recorded")
        return
    click.echo(
        f"{'started (UTC)':<19}  {'branch':<10} {'status':<18} {'secs':>8}  {'commit':<12}  counts / error"
    )
    for r in records:
        click.echo(_row(r))
