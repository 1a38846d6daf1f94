"""PreemptionHandler: a flag, not an exit; handlers restored; SIGTERM to the process group of a
trainer with DataLoader workers -> checkpoint + clean exit + exact resume; kill during a save."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from dataversion import Repo  # noqa: E402
from dataversion.records import make_text_records  # noqa: E402
from dataversion.torch import load_checkpoint, read_checkpoint  # noqa: E402
from dataversion.training.preemption import PreemptionHandler, active_signals  # noqa: E402

from .scripts import resumable_trainer  # noqa: E402

N = 600


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> str:
    u = "file://" + str(tmp_path_factory.mktemp("preempt") / "repo")
    Repo.init(u).commit(make_text_records([f"preempt {i} " + "y" * (i % 9) for i in range(N)]), branch="main",
                        message="one", target_shard_bytes=4 * 1024)
    return u


def test_flag_only_and_handlers_restored():
    calls = []

    def previous(signum, frame):
        calls.append(signum)

    old_term = signal.signal(signal.SIGTERM, previous)
    old_usr1 = signal.getsignal(signal.SIGUSR1)
    try:
        with PreemptionHandler([signal.SIGTERM, signal.SIGUSR1]) as guard:
            assert guard.installed and not guard.requested
            assert active_signals() >= {signal.SIGTERM, signal.SIGUSR1}
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.05)
            assert guard.requested and guard.signal_name == "SIGUSR1"
            os.kill(os.getpid(), signal.SIGTERM)  # still alive: only the flag
            time.sleep(0.05)
            assert guard.count == 2 and guard.signum == signal.SIGUSR1 and calls == []
        assert signal.getsignal(signal.SIGTERM) is previous and signal.getsignal(signal.SIGUSR1) == old_usr1
        assert signal.SIGUSR1 not in active_signals()
        guard.close()  # idempotent
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert calls == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, old_term)


def test_inert_outside_the_main_thread():
    import threading

    out = {}
    t = threading.Thread(target=lambda: out.setdefault("g", PreemptionHandler()))
    t.start()
    t.join()
    assert not out["g"].installed and signal.getsignal(signal.SIGTERM) is not out["g"]._on_signal


TRAIN = resumable_trainer(
    setup="guard = PreemptionHandler()",
    loader='SnapshotLoader(url, batch_size=8, num_workers=2, window=100, columns=["text"])',
    log_line='" ".join(batch["record_id"])',
    after_step="""
        if guard.requested:
            save_checkpoint(ckpt, loader=loader, trainer={"step": step}, run="preempt", step=step)
            print(f"PREEMPTED {step}", flush=True)
            sys.exit(0)
    """,
    end='print("DONE", flush=True)',
)


def _group_alive(pgid: int) -> list[str]:
    """Processes still in the group (zombies included), as 'pid state' strings."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            out.append(f"{d} {fields[0]}")
    return out


def test_sigterm_to_process_group_saves_exits_and_resumes_exactly(url, tmp_path, trainer):
    def start(ckpt, logp, delay="0"):
        return trainer.start(TRAIN, url, ckpt, logp, capture=True, new_session=True, STEP_DELAY=delay)

    ref = start(tmp_path / "ref.pt", tmp_path / "ref.log")
    out, err = ref.communicate(timeout=120)
    assert ref.returncode == 0 and "DONE" in out, err[-2000:]
    reference = (tmp_path / "ref.log").read_text().splitlines()

    ckpt, logp = tmp_path / "run.pt", tmp_path / "run.log"
    proc = start(ckpt, logp, delay="0.02")
    assert trainer.wait_for_lines(logp, 20, proc) >= 20
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)  # the whole group: trainer and its DataLoader workers
    out, err = proc.communicate(timeout=10)
    took = time.monotonic() - sent
    assert proc.returncode == 0, err[-3000:]
    assert took < 5 and "PREEMPTED" in out
    assert "Traceback" not in err and "killed by signal" not in err and "Error" not in err, err[-3000:]
    time.sleep(0.5)
    assert _group_alive(proc.pid) == []  # no worker left behind, no zombie
    step = read_checkpoint(str(ckpt))["trainer"]["step"]
    assert step == len(logp.read_text().splitlines())  # saved after the step in flight, nothing lost
    assert step < len(reference)

    again = start(ckpt, logp)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0 and "DONE" in out, err[-2000:]
    assert logp.read_text().splitlines() == reference  # the remaining sequence, exactly


KILL_DURING_SAVE = textwrap.dedent(
    """
    import os, sys, time, torch
    from dataversion.torch import SnapshotLoader, save_checkpoint
    url, ckpt = sys.argv[1:3]
    loader = SnapshotLoader(url, batch_size=8, num_workers=0, window=100, columns=["text"])
    it = iter(loader)
    next(it)
    save_checkpoint(ckpt, loader=loader, model={"w": torch.ones(4)}, step=1, run="k")
    next(it)
    real_fsync = os.fsync
    def stalled_fsync(fd):   # the new bytes are in the temp file, not yet renamed into place
        real_fsync(fd)
        print("SAVING", flush=True)
        time.sleep(60)
    os.fsync = stalled_fsync
    save_checkpoint(ckpt, loader=loader, model={"w": torch.zeros(1 << 20)}, step=2, run="k")
    """
)


def test_kill_during_save_leaves_previous_checkpoint_loadable(url, tmp_path, trainer):
    ckpt = tmp_path / "ck" / "last.pt"
    proc = trainer.start(KILL_DURING_SAVE, url, ckpt, capture=True)
    assert proc.stdout.readline().strip() == "SAVING"
    proc.kill()
    proc.wait()
    assert any(p.name.startswith(".tmp-last.pt") for p in ckpt.parent.iterdir())  # it died mid-write
    from dataversion.torch import SnapshotLoader

    loader = SnapshotLoader(url, batch_size=8, window=100, columns=["text"])
    states = load_checkpoint(str(ckpt), loader=loader)
    assert torch.equal(states["model"]["w"], torch.ones(4)) and loader.position == 8
