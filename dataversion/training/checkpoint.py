"""Checkpoints: the loader's state saved beside the model's, written atomically through the
store layer, and recorded in the dataset repository's lineage.

A checkpoint location is a local path or s3://BUCKET/KEY, turned into (store, key) once by
`stores.open_location`. The bytes functions and the lineage call need no torch; torch is
imported only to (de)serialize, so `read_checkpoint_bytes` serves torch-free callers (the CLI).

Verified on load (`parse_checkpoint`, used by `read_checkpoint`, `load_checkpoint` and
`dataversion inspect`): torch.load checks no checksum, so before it runs every zip member's
CRC-32 is checked (that covers the saved states' bytes too); the dataversion metadata carries
`checksum`, the sha256 of its canonical JSON (the loader state, run, step, saved_at, lineage
id), compared after; the loader state is validated (`state.validate_loader_state`). When the
checkpoint names its lineage entry (`lineage_id`) and the loader's repository holds it,
`load_checkpoint` compares the file's sha256 with the entry's. Any failure is one
BadInputError line naming the file; nothing is restored.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from ..errors import BadInputError, CorruptObjectError, NotFoundError, StoreError
from ..stores import open_location
from ..stores.atomic import write_atomic
from . import lineage
from .state import state_checksum, validate_loader_state

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
    Lineage (`dataversion.training.lineage`): unless `record=False`, a save with a loader pins
    the commit against gc, then appends an entry (run, step, commit, seed, epoch, position,
    world size, location, sha256); only rank 0 records. If the repository cannot be reached
    the checkpoint is still written and a RuntimeWarning says the entry was not (a pin may
    still land without its entry: `dataversion unpin --run/--checkpoint` finds it from the
    pin). Returns the metadata written, plus "lineage": the entry recorded (a dict) or None.
    """
    ds = getattr(loader, "dataset", loader)
    will_record = loader is not None and record is not False and ds.rank == 0
    meta: dict[str, Any] = {
        "loader": loader.state_dict() if loader is not None else None,
        "run": run,
        "step": None if step is None else int(step),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # the entry's id is chosen now so that a load can find the entry and compare sha256
        "lineage_id": lineage.new_entry_id() if will_record else None,
    }
    meta["checksum"] = state_checksum(meta)
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
    if will_record:
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
            sha256=hashlib.sha256(data).hexdigest(), saved_at=meta["saved_at"], entry_id=meta["lineage_id"],
        )

    # Bounded: a preemption notice leaves a minute or two, and an unreachable S3 endpoint
    # would otherwise hold the save for its whole retry budget.
    # The pin is written before the entry (`lineage.record_checkpoint`): a write still in
    # flight when this gives up may land later, leaving a pin without its entry. That errs on
    # the safe side (the commit of a usable checkpoint stays protected) and the pin names its
    # run and checkpoint, so `dataversion unpin` finds and removes it all the same.
    timeout = float(os.environ.get("DATAVERSION_LINEAGE_TIMEOUT", "15"))
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataversion-lineage")
    release = (f"its commit may still get pinned (a write in flight can land later); "
               f"`dataversion unpin --checkpoint {lineage.checkpoint_location(path)}` releases it")
    try:
        entry = pool.submit(record).result(timeout=timeout)
    except FutureTimeout:
        warnings.warn(
            f"checkpoint {path} was written, but its lineage entry was NOT recorded in {ds.url}: "
            f"no answer within {timeout:g} s (DATAVERSION_LINEAGE_TIMEOUT); {release}",
            RuntimeWarning, stacklevel=3,
        )
        return None
    except Exception as e:  # noqa: BLE001 - the checkpoint must survive a lost repository
        warnings.warn(
            f"checkpoint {path} was written, but its lineage entry was NOT recorded in {ds.url}: {e}; "
            "if its pin was written, `dataversion unpin --run "
            f"{meta['run'] or lineage.DEFAULT_RUN}` releases it",
            RuntimeWarning, stacklevel=3,
        )
        return None
    finally:
        pool.shutdown(wait=False)
    return entry.to_dict()


def _check_zip(raw: bytes, path: str) -> None:
    """Every member of the torch zip archive reads back with its CRC-32 (torch.load checks none)."""
    if not raw.startswith(b"PK\x03\x04"):
        raise BadInputError(f"{path} is not a checkpoint torch can read (not a zip archive)")
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            for info in z.infolist():
                # torch writes plain stored files; torch's zip reader (miniz) reads a member
                # flagged as a directory (DOS attribute 0x10) as uninitialized memory, and
                # Python's zipfile would not notice: refuse anything torch would not write
                if info.is_dir() or info.external_attr & 0x10 or info.compress_type != zipfile.ZIP_STORED \
                        or info.compress_size != info.file_size:
                    raise BadInputError(f"{path} is damaged: archive member {info.filename!r:.80} is not a stored file")
            bad = z.testzip()
    except BadInputError:
        raise
    except Exception as e:  # noqa: BLE001 - zipfile raises many types for damaged archives
        raise BadInputError(f"{path} is damaged: not a readable archive ({type(e).__name__}: {e})") from None
    if bad is not None:
        raise BadInputError(f"{path} is damaged: {bad} fails its CRC-32 check")


def _check_meta(meta: Any, path: str) -> dict[str, Any]:
    if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
        raise BadInputError(f"{path} is not a dataversion checkpoint (its metadata is not a dict)")
    meta = dict(meta)
    if "checksum" in meta:
        claimed = meta.pop("checksum")
        if not isinstance(claimed, str) or state_checksum(meta) != claimed:
            raise BadInputError(f"{path} is damaged: its dataversion metadata does not match its checksum")
    else:  # written before checksums: the zip CRCs still held; say what is not checked
        warnings.warn(f"{path} carries no metadata checksum (saved by an older dataversion)", RuntimeWarning, stacklevel=3)
    if meta.get("loader") is not None:
        try:
            meta["loader"] = validate_loader_state(meta["loader"])
        except BadInputError as e:
            raise BadInputError(f"{path}: {e}") from None
    for name, kind in (("run", str), ("step", int), ("saved_at", str), ("lineage_id", str)):
        v = meta.get(name)
        if v is not None and (type(v) is not kind):
            raise BadInputError(f"{path}: metadata {name} must be a {kind.__name__}, not {type(v).__name__}")
    return meta


def parse_checkpoint(raw: bytes, path: str, *, map_location: Any = "cpu", weights_only: bool = True) -> dict[str, Any]:
    """A checkpoint's bytes -> its dict (dataversion metadata under "dataversion"), verified.

    Checks the archive's CRC-32s, then torch.load, then the metadata checksum and the loader
    state schema. Raises BadInputError (one line naming `path`) on any failure; never a raw
    KeyError/IndexError/TypeError from a damaged file."""
    import torch

    _check_zip(raw, path)
    try:
        data = torch.load(io.BytesIO(raw), map_location=map_location, weights_only=weights_only)
    except Exception as e:  # noqa: BLE001 - torch raises many types (KeyError, IndexError, ...) for damaged files
        raise BadInputError(f"{path} is not a checkpoint torch can read ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(data, dict) or "dataversion" not in data:
        raise BadInputError(f"{path} is not a dataversion checkpoint")
    data["dataversion"] = _check_meta(data["dataversion"], path)
    return data


def read_checkpoint(path: str, *, map_location: Any = "cpu", weights_only: bool = True) -> dict[str, Any]:
    """The raw checkpoint dict (dataversion metadata under "dataversion"), verified
    (`parse_checkpoint`).

    Raises NotFoundError if nothing is there, BadInputError if it is not a dataversion
    checkpoint torch can read or it is damaged."""
    return parse_checkpoint(read_checkpoint_bytes(path), path, map_location=map_location, weights_only=weights_only)


def check_lineage_sha256(repo: Any, meta: dict[str, Any], raw: bytes, path: str) -> bool | None:
    """Compare the file's sha256 with its lineage entry's: True if equal, None if there is no
    entry to compare with (none named, not recorded, another repository); BadInputError if
    they differ (the file was changed after it was saved)."""
    entry_id = meta.get("lineage_id")
    if entry_id is None:
        return None
    try:
        recorded = lineage.recorded_sha256(repo, meta.get("run") or lineage.DEFAULT_RUN, entry_id)
    except (StoreError, CorruptObjectError, OSError) as e:  # the entry's trouble, not the file's
        warnings.warn(f"{path}: could not compare with its lineage entry {entry_id}: {e}", RuntimeWarning, stacklevel=3)
        return None
    if recorded is None:
        return None
    actual = hashlib.sha256(raw).hexdigest()
    if actual != recorded:
        raise BadInputError(
            f"{path} is damaged or was replaced: its sha256 {actual[:16]}... is not the {recorded[:16]}... "
            f"its lineage entry {entry_id} recorded"
        )
    return True


def load_checkpoint(
    path: str,
    loader: SnapshotLoader | SnapshotDataset | None = None,
    *,
    allow_dataset_change: bool = False,
    map_location: Any = "cpu",
    weights_only: bool = True,
) -> dict[str, Any]:
    """Restore the loader (epoch, position, seed) and return the other saved states.

    The checkpoint is verified first (`parse_checkpoint`; with a loader, also against its
    lineage entry's sha256 when the loader's repository has it): BadInputError, nothing
    restored. Refuses a checkpoint of another commit (the error names both) unless
    `allow_dataset_change=True`. A following `set_epoch(restored_epoch)` keeps the position.
    """
    raw = read_checkpoint_bytes(path)
    data = parse_checkpoint(raw, path, map_location=map_location, weights_only=weights_only)
    meta = data.pop("dataversion")
    if loader is not None:
        if meta.get("loader") is None:
            raise BadInputError(f"{path} was saved without a loader state")
        ds = getattr(loader, "dataset", loader)
        check_lineage_sha256(ds.open_repo(), meta, raw, path)
        loader.load_state_dict(meta["loader"], allow_dataset_change=allow_dataset_change)
    return data
