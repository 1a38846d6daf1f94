"""One way to write a local file so that readers see the old bytes or the new, never half.

Every local writer (the file:// store, the shard cache, checkpoints, features, run history)
goes through `write_atomic`: a temporary file in the target's directory, fsynced, renamed
into place, then the directory fsynced so the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

TMP_PREFIX = ".tmp-"


def _file_mode() -> int:
    """0666 less the process's umask: the mode `open()` gives a new file (mkstemp's is 0600).
    Read once, at import: reading the umask sets it, which is not thread-safe."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()  # objects of a shared file:// repository are readable as the umask says


def fsync_dir(directory: str) -> None:
    """Make a rename or link in `directory` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_temp(directory: str, data: bytes, *, fsync: bool = True, name: str = "") -> str:
    """Write `data` to a new temporary file in `directory` (created if needed); its path.

    The temporary name is `.tmp-<name>-XXXX`, so a leftover says what it was meant to be."""
    for attempt in range(3):
        os.makedirs(directory, exist_ok=True)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{name}-" if name else TMP_PREFIX, dir=directory)
            break
        except FileNotFoundError:
            # A concurrent delete pruned the (then empty) directory between the two calls.
            if attempt == 2:
                raise
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def write_atomic(path: str, data: bytes, *, fsync: bool = True) -> None:
    """Replace the file at `path` with `data` atomically (and durably when `fsync`)."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = write_temp(directory, data, fsync=fsync, name=os.path.basename(path))
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(directory)


def move_atomic(tmp: str, path: str, *, fsync: bool = True) -> None:
    """Rename an already written temporary file into place (same directory), durably."""
    os.replace(tmp, path)
    if fsync:
        fsync_dir(os.path.dirname(os.path.abspath(path)))
