"""Shared by the training tests: each test's own shard cache (`DATAVERSION_CACHE_DIR` under its
tmp_path), and `trainer`, which runs a training script in a real subprocess (to SIGKILL or
SIGTERM it mid-epoch and resume from its checkpoint)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parents[3])


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAVERSION_CACHE_DIR", str(tmp_path / "cache"))


class Trainer:
    """Starts training scripts as subprocesses with this checkout on PYTHONPATH, one thread
    per process (OMP_NUM_THREADS=1) and the test's own shard cache."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1",
                "DATAVERSION_CACHE_DIR": str(self.tmp_path / "cache"), **extra}

    def start(self, script: str, *args: object, capture: bool = False, new_session: bool = False,
              **env: str) -> subprocess.Popen:
        """Run `script` (source text, written once per name) with `args`; `env` adds variables."""
        path = self.tmp_path / f"train_{zlib.crc32(script.encode()):08x}.py"
        if not path.exists():
            path.write_text(script)
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True} if capture else {}
        return subprocess.Popen([sys.executable, str(path), *map(str, args)], env=self.env(**env),
                                start_new_session=new_session, **pipes)

    @staticmethod
    def wait_for_lines(path: Path, n: int, proc: subprocess.Popen | None = None, timeout: float = 60) -> int:
        """Poll until `path` has at least `n` lines (or the process ended); the count reached."""
        deadline = time.time() + timeout
        count = 0
        while time.time() < deadline:
            count = len(path.read_text().splitlines()) if path.exists() else 0
            if count >= n or (proc is not None and proc.poll() is not None):
                break
            time.sleep(0.01)
        return count

    @staticmethod
    def cut_log(path: Path, lines: int) -> None:
        """Keep the first `lines` lines: what a restart replays starts after its checkpoint."""
        kept = path.read_text().splitlines()[:lines]
        path.write_text("".join(line + "\n" for line in kept))


@pytest.fixture
def trainer(tmp_path: Path) -> Trainer:
    return Trainer(tmp_path)
