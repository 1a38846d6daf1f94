"""Stand-ins for `run_ingest` that the runner tests inject (`--ingest-fn runner_fakes:add_files`).

They run in the runner's child process and are steered by environment variables, which the
child inherits: FAKE_SLEEP (seconds before committing), FAKE_FAIL_FIRST (fail the first N
calls, counted in FAKE_STATE_DIR), FAKE_FAIL_KIND ("transient": ConnectionError, else
ValueError), FAKE_STATE_DIR (where calls and pids are logged).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from dataversion import Repo


def _state_dir() -> Path | None:
    d = os.environ.get("FAKE_STATE_DIR")
    return Path(d) if d else None


def add_files(source: str, repo_url: str, branch: str = "main", **_: object) -> dict:
    """Commit the files under the local directory `source` (commit None when nothing is new)."""
    state = _state_dir()
    call = 1
    if state is not None:
        state.mkdir(parents=True, exist_ok=True)
        with open(state / "calls.log", "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "t": time.time()}) + "\n")
        call = sum(1 for _ in open(state / "calls.log"))
    if call <= int(os.environ.get("FAKE_FAIL_FIRST", "0")):
        if os.environ.get("FAKE_FAIL_KIND") == "transient":
            raise ConnectionError(f"fake transient failure on call {call}")
        raise ValueError(f"fake permanent failure on call {call}")
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
    repo = Repo.init(repo_url)
    result = repo.add([source], branch=branch).to_dict()
    n = result["added"]
    return {"commit": result["commit"], "parent": result["parent"], "inputs": n, "kept": n,
            "duplicates": 0, "rejected": 0, "by_modality": {"text": n} if n else {}}
