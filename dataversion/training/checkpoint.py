"""Checkpoints: the loader's state saved beside the model's, written atomically through the
store layer, and recorded in the dataset repository's lineage.

A checkpoint location is a local path or s3://BUCKET/KEY, turned into (store, key) once by
`stores.open_location`. The bytes functions and the lineage call need no torch; torch is
imported only to (de)serialize, so `read_checkpoint_bytes` serves torch-free callers (the CLI).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from ..errors import BadInputError, NotFoundError
from ..stores import open_location
from ..stores.atomic import write_atomic
from . import lineage

if TYPE_CHECKING:
    from .dataset import SnapshotDataset
    from .loader import SnapshotLoader


def write_checkpoint_bytes(path: str, data: bytes) -> None:
    """Write a checkpoint whole: readers see the old bytes or the new, never part.

    s3://: one PUT. Local: temp file, fsync, rename, directory fsync (missing directories
    are made), because a checkpoint is what a restarted job resumes from. Errors: StoreError,
    or OSError for a local disk; BadInputError if `path` names no object.
    """
    store, key = open_location(path, for_write=True)
    local = store.local_path(key)
    if local is not None:
        # LocalStore.put is atomic but (not yet) durable: fsync here until it is.
        write_atomic(local, data)
    else:
        store.put(key, data)


def read_checkpoint_bytes(path: str) -> bytes:
    """A checkpoint's bytes from a local path or s3://BUCKET/KEY.

    Raises NotFoundError if nothing is there, BadInputError if `path` is a directory or
    names no object.
    """
    try:
        store, key = open_location(path)
        local = store.local_path(key)
        if local is not None and os.path.isdir(local):
            raise BadInputError(f"{path} is a directory, not a checkpoint")
        return store.get(key)
    except NotFoundError as e:
        raise NotFoundError(f"no checkpoint at {path}") from e


def save_checkpoint(
    path: str,
    loader: SnapshotLoader | SnapshotDataset | None = None,
    *,
    run: str | None = None,
    step: int | None = None,
    record: bool | None = None,
    **states: Any,
) -> dict[str, Any]:
    """Write a checkpoint atomically (temp file + rename locally, one whole PUT on s3://),
    then record it in the dataset repository's lineage.

    `states` (model=..., optimizer=...) are saved beside the loader's state under their
    names. `run`/`step` are stored in the checkpoint's metadata and its lineage entry.
    Lineage (`dataversion.training.lineage`): unless `record=False`, a save with a loader appends an
    entry (run, step, commit, seed, epoch, position, world size, location, sha256) and pins
    the commit against gc; only rank 0 records. If the repository cannot be reached the
    checkpoint is still written and a RuntimeWarning says the entry was not. Returns the
    metadata written, plus "lineage": the entry recorded (a dict) or None.
    """
    meta: dict[str, Any] = {
        "loader": loader.state_dict() if loader is not None else None,
        "run": run,
        "step": step,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    reserved = {"dataversion"} & states.keys()
    if reserved:
        raise BadInputError(f"state name {sorted(reserved)} is reserved")
    if record and loader is None:
        raise BadInputError("record=True needs the loader (its commit and position are what is recorded)")
    import torch

    buf = io.BytesIO()
    torch.save({"dataversion": meta, **states}, buf)
    data = buf.getvalue()
    write_checkpoint_bytes(path, data)
    entry = None
    if loader is not None and record is not False:
        entry = _record_lineage(path, loader, meta, data)
    return {**meta, "lineage": entry}


def _record_lineage(path: str, loader: SnapshotLoader | SnapshotDataset, meta: dict[str, Any], data: bytes) -> dict[str, Any] | None:
    """Rank 0 appends the lineage entry; a failure warns (the checkpoint is already safe)."""
    ds = getattr(loader, "dataset", loader)  # a SnapshotLoader's dataset, or the dataset
    if ds.rank != 0:
        return None

    def record() -> Any:
        return lineage.record_checkpoint(
            ds.open_repo(), meta["loader"], checkpoint=path, run=meta["run"], step=meta["step"],
            sha256=hashlib.sha256(data).hexdigest(), saved_at=meta["saved_at"],
        )

    # Bounded: a preemption notice leaves a minute or two, and an unreachable S3 endpoint
    # would otherwise hold the save for its whole retry budget.
    timeout = float(os.environ.get("DATAVERSION_LINEAGE_TIMEOUT", "15"))
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataversion-lineage")
    try:
        entry = pool.submit(record).result(timeout=timeout)
    except FutureTimeout:
        warnings.warn(
            f"checkpoint {path} was written, but its lineage entry was NOT recorded in {ds.url}: "
            f"no answer within {timeout:g} s (DATAVERSION_LINEAGE_TIMEOUT)",
            RuntimeWarning, stacklevel=3,
        )
        return None
    except Exception as e:  # noqa: BLE001 - the checkpoint must survive a lost repository
        warnings.warn(
            f"checkpoint {path} was written, but its lineage entry was NOT recorded in {ds.url}: {e}",
            RuntimeWarning, stacklevel=3,
        )
        return None
    finally:
        pool.shutdown(wait=False)
    return entry.to_dict()


def read_checkpoint(path: str, *, map_location: Any = "cpu", weights_only: bool = True) -> dict[str, Any]:
    """The raw checkpoint dict (dataversion metadata under "dataversion").

    Raises NotFoundError if nothing is there, BadInputError if it is not a dataversion
    checkpoint torch can read."""
    import torch

    raw = read_checkpoint_bytes(path)
    try:
        data = torch.load(io.BytesIO(raw), map_location=map_location, weights_only=weights_only)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:  # torch raises these for non-checkpoints
        raise BadInputError(f"{path} is not a readable checkpoint: {e}") from e
    if not isinstance(data, dict) or "dataversion" not in data:
        raise BadInputError(f"{path} is not a dataversion checkpoint")
    return data


def load_checkpoint(
    path: str,
    loader: SnapshotLoader | SnapshotDataset | None = None,
    *,
    allow_dataset_change: bool = False,
    map_location: Any = "cpu",
    weights_only: bool = True,
) -> dict[str, Any]:
    """Restore the loader (epoch, position, seed) and return the other saved states.

    Refuses a checkpoint of another commit (the error names both) unless
    `allow_dataset_change=True`. A following `set_epoch(restored_epoch)` keeps the position.
    """
    data = read_checkpoint(path, map_location=map_location, weights_only=weights_only)
    meta = data.pop("dataversion")
    if loader is not None:
        if meta.get("loader") is None:
            raise BadInputError(f"{path} was saved without a loader state")
        loader.load_state_dict(meta["loader"], allow_dataset_change=allow_dataset_change)
    return data
