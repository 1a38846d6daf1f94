"""Preemption notices (SIGTERM) turned into a flag the training loop checks at a step boundary.

    with PreemptionHandler() as guard:
        for batch in loader:
            train_step(batch)
            if guard.requested:
                save_checkpoint("ckpt.pt", loader=loader, run="exp-42", step=step)
                sys.exit(0)

A signal handler that saved or exited on the spot could cut a step (or a checkpoint write) in
half; this one only sets a flag. Handlers are installed in the main thread of the main
process only (Python allows nothing else; a DataLoader worker that constructs one gets an
inert handler), and the previous handlers come back on `close()` / leaving the `with`.

Process groups: `kill -TERM -PGID` (what schedulers and `timeout` send) reaches the
DataLoader workers too. Torch's workers die of it and the trainer then fails with "DataLoader
worker ... is killed by signal" before it can save. `quiet_worker_signals()`, which the
dataversion loader calls in every worker, makes workers ignore SIGTERM (and the signals an
active handler watches); they still exit when the trainer shuts them down or dies (the
loader's parent-death watch), so nothing is left behind. Torch-free.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from collections.abc import Iterable
from types import FrameType
from typing import Any

__all__ = ["PreemptionHandler", "quiet_worker_signals", "active_signals"]

# Signals watched by open handlers in this process. Forked workers inherit the set, so they
# ignore exactly what the trainer turns into a flag.
_ACTIVE: dict[int, int] = {}


def active_signals() -> set[int]:
    """Signals some open PreemptionHandler in this process is watching."""
    return {s for s, n in _ACTIVE.items() if n > 0}


def quiet_worker_signals(extra: Iterable[int] = ()) -> None:
    """In a worker process: ignore SIGTERM, the signals active handlers watch, and `extra`.

    The worker must still have a way to die: the dataversion loader's workers exit when their
    parent does (PR_SET_PDEATHSIG + a watchdog) and when the DataLoader shuts them down.
    """
    for sig in {signal.SIGTERM, *active_signals(), *extra}:
        try:
            signal.signal(sig, signal.SIG_IGN)
        except (ValueError, OSError):  # not the main thread, or an uncatchable signal
            pass


def _is_main_process() -> bool:
    return multiprocessing.parent_process() is None and threading.current_thread() is threading.main_thread()


class PreemptionHandler:
    """Turns SIGTERM (and `signals`) into `requested = True`; restores the old handlers on close.

    - Installed only in the main thread of the main process; elsewhere (a DataLoader worker,
      a thread) the handler is inert: `installed` is False and `requested` stays False.
    - Nothing else happens on a signal: no exception, no exit. Check `requested` between
      steps. Receiving the signal again changes nothing (the count is in `count`).
    - `close()` (or leaving the `with` block) puts back exactly the handlers that were there.
    """

    def __init__(self, signals: Iterable[int | signal.Signals] = (signal.SIGTERM,)):
        self.signals: tuple[int, ...] = tuple(dict.fromkeys(int(s) for s in signals))
        if not self.signals:
            raise ValueError("PreemptionHandler needs at least one signal")
        self.requested = False
        self.signum: int | None = None  # the first signal received
        self.count = 0
        self._previous: dict[int, Any] = {}
        self.installed = False
        if _is_main_process():
            self._install()

    def _install(self) -> None:
        try:
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._on_signal)
                _ACTIVE[sig] = _ACTIVE.get(sig, 0) + 1
        except BaseException:
            self.close()
            raise
        self.installed = True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if not self.requested:
            self.signum = signum
        self.requested = True

    @property
    def signal_name(self) -> str | None:
        """Name of the first signal received ("SIGTERM"), or None."""
        return signal.Signals(self.signum).name if self.signum is not None else None

    def close(self) -> None:
        """Restore the previous handlers (idempotent)."""
        for sig, prev in self._previous.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
            _ACTIVE[sig] = max(0, _ACTIVE.get(sig, 0) - 1)
        self._previous.clear()
        self.installed = False

    def __enter__(self) -> PreemptionHandler:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PreemptionHandler(signals={[signal.Signals(s).name for s in self.signals]}, requested={self.requested})"
