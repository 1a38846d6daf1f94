"""One ingestion attempt, run in a child process: spawned, in its own process group, dying
with its parent, killed (with Beam's workers) when the run is abandoned. And what a failed
attempt means: `IngestError` (transient or permanent, for the retry policy) or
`RunAbandoned`.

The ingestion commits with a compare-and-swap as its last step, so a killed attempt leaves
no partial commit.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable
from typing import Any

from dataversion.errors import ConflictError, DataversionError
from dataversion.lifecycle import die_with_parent

IngestFn = Callable[..., Any]


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


def run_attempt(
    spec: str | IngestFn,
    source: str,
    repo_url: str,
    branch: str,
    kwargs: dict[str, Any],
    *,
    abandon_reason: Callable[[], str | None],
) -> dict[str, Any]:
    """Run `spec(source, repo_url, branch=branch, **kwargs)` in a child process; its report.

    `abandon_reason()` is polled while the child runs: a reason kills the child's process
    group and raises RunAbandoned. A failed ingestion raises IngestError (a child that died
    without answering is a transient one, "ProcessDied").
    """
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(
        target=_ingest_child,
        name=f"ingest-{branch}",
        daemon=False,
        args=(send, spec, source, repo_url, branch, kwargs),
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
            reason = abandon_reason()
            if reason:
                break
    finally:
        if reason or result is None:
            _kill(child)
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


def _kill(child) -> None:
    """SIGKILL the child's process group (Beam's worker processes included)."""
    if child.pid is None:
        return
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        child.kill()
