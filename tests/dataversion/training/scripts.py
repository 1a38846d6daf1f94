"""Training scripts the tests run as real subprocesses (see `conftest.Trainer`)."""

from __future__ import annotations

import textwrap


def resumable_trainer(*, loader: str, log_line: str, after_step: str, imports: str = "", setup: str = "",
                      end: str = 'log.write("DONE\\n")') -> str:
    """The source of a training script run as `script URL CKPT LOG`: it builds `loader`
    (an expression), resumes from CKPT when it exists (step and epoch from the checkpoint),
    runs epochs 0 and 1 writing `log_line` (an expression; `epoch`, `batch` in scope) for
    each batch to LOG, sleeps STEP_DELAY seconds a step, then runs `after_step` (Python
    lines; `step`, `ckpt`, `loader` in scope), and at the end `end`."""
    body = textwrap.indent(textwrap.dedent(after_step).strip(), " " * 8)
    return textwrap.dedent(f"""
    import hashlib, os, sys, time
    from dataversion.torch import SnapshotLoader, save_checkpoint, load_checkpoint, PreemptionHandler
    {imports}
    url, ckpt, logpath = sys.argv[1:4]
    delay = float(os.environ.get("STEP_DELAY", "0"))
    {setup}
    loader = {loader}
    step, start_epoch = 0, 0
    if os.path.exists(ckpt):
        state = load_checkpoint(ckpt, loader=loader)
        step, start_epoch = state["trainer"]["step"], loader.epoch
    log = open(logpath, "a", buffering=1)
    for epoch in range(start_epoch, 2):
        loader.set_epoch(epoch)
        for batch in loader:
            log.write({log_line} + "\\n")
            step += 1
            time.sleep(delay)
    """) + body + "\n" + end + "\n"
