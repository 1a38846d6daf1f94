"""Child processes that never outlive their parent.

Loader workers, cache prefetchers and scheduled-run children call `die_with_parent` first:
Linux's PR_SET_PDEATHSIG kills them with the parent (SIGKILL included), and a watchdog
thread covers platforms without it and the race where the parent died before the call.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None, *, poll_seconds: float = 0.5) -> None:
    """Make this process exit when `parent_pid` (default: the current parent) dies."""
    parent_pid = os.getppid() if parent_pid is None else parent_pid
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll_seconds)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="dataversion-parent-watchdog", daemon=True).start()
