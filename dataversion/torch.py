"""PyTorch integration: a loader pinned to one commit, with exact O(1) resume.

    loader = SnapshotLoader("s3://datasets/web", ref="main", batch_size=256, num_workers=4)
    for epoch in range(start_epoch, 10):
        loader.set_epoch(epoch)
        for batch in loader:          # batch["record_id"]: list of 32-char hex strings
            ...
            save_checkpoint("ckpt.pt", loader=loader, model=model.state_dict())

The order of samples is `dataversion.training.order` (a pure function of commit, seed, epoch); the
loader's state is (commit, seed, epoch, position) where position counts samples consumed
globally. Each DataLoader worker builds whole batches (Arrow `take` on decoded shards) and
sends one batch object per step; workers die with their parent (PR_SET_PDEATHSIG plus a
parent-pid watchdog), so a SIGKILLed trainer leaves no process behind.

Batches are `Batch` dicts: "record_id" (list of hex strings, always present) and one list
per requested column ("text", "label", ... ; "data" as bytes), with attributes `epoch`,
`index` (batch number of this rank in the epoch) and `position` (the global position once
this batch is consumed).
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import tempfile
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.utils.data as tud

from .cache import Prefetcher, ReadTier, open_tier
from .errors import BadInputError, DataversionError, NotFoundError
from .lifecycle import die_with_parent
from .records import ids_as_numpy
from .repo import Repo
from .shards import live_rows
from .training import order as order_mod
from .training.preemption import PreemptionHandler, quiet_worker_signals

__all__ = [
    "Batch", "SnapshotDataset", "SnapshotLoader", "save_checkpoint", "load_checkpoint", "read_checkpoint",
    "PreemptionHandler",
]

STATE_FORMAT = 1
RECORD_COLUMNS = ("modality", "source", "label", "meta", "text", "data")


class Batch(dict):
    """One batch: column name -> list (record_id: hex strings), plus where it lies in the order."""

    epoch: int = 0
    index: int = 0
    position: int = 0


def _distributed(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None or world_size is not None:
        world = 1 if world_size is None else int(world_size)
        return (0 if rank is None else int(rank)), world
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


# ---------------------------------------------------------------------------- orphans
class _WorkerInit:
    """worker_init_fn: die with the parent, then the user's own init."""

    def __init__(self, parent_pid: int, user_fn: Callable[[int], None] | None):
        self.parent_pid, self.user_fn = parent_pid, user_fn

    def __call__(self, worker_id: int) -> None:
        die_with_parent(self.parent_pid)
        # A SIGTERM to the process group is the trainer's to handle (PreemptionHandler):
        # a worker that died of it would fail the trainer's next step before it could save.
        quiet_worker_signals()
        if self.user_fn is not None:
            self.user_fn(worker_id)


def _identity(x: Any) -> Any:
    return x


# ---------------------------------------------------------------------------- dataset
class SnapshotDataset(tud.IterableDataset):
    """An IterableDataset over one commit that yields whole `Batch`es in the pure order.

    Use with `DataLoader(dataset, batch_size=None, collate_fn=lambda b: b)`; after each batch
    the training loop consumed, call `dataset.consumed(batch)` so that `state_dict()` is
    exact (`SnapshotLoader` does both for you). Every `__iter__` starts at the current
    (epoch, position).
    """

    def __init__(
        self,
        repo: str | Repo,
        ref: str = "main",
        *,
        batch_size: int = 256,
        shuffle: bool = True,
        seed: int = 0,
        columns: list[str] | None = None,
        window: int = order_mod.DEFAULT_WINDOW,
        rank: int | None = None,
        world_size: int | None = None,
        remainder: str = "pad",
        cache: str | ReadTier | None = "auto",
        prefetch: int = 2,
        decoded_cache_bytes: int = 512 * 1024**2,
        format: str = "python",
    ):
        super().__init__()
        self.repo = repo if isinstance(repo, Repo) else Repo.open(repo)
        self.url = self.repo.url
        self.ref = ref
        self.commit_id = self.repo.resolve(ref)  # NotFoundError here, never mid-epoch
        shards = self.repo.read_manifest(self.commit_id).shards
        self.shards = [(s.id, s.rows, tuple(s.deleted)) for s in shards]
        self.sizes = tuple(s.live_rows for s in shards)
        self.num_records = sum(self.sizes)
        if remainder not in order_mod.REMAINDER_POLICIES:
            raise BadInputError(f"remainder must be one of {order_mod.REMAINDER_POLICIES}, not {remainder!r}")
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise BadInputError("batch_size must be >= 1")
        self.shuffle, self.seed, self.window, self.remainder = bool(shuffle), int(seed), int(window), remainder
        self.rank, self.world_size = _distributed(rank, world_size)
        if not 0 <= self.rank < self.world_size:
            raise BadInputError(f"rank {self.rank} is not in [0, {self.world_size})")
        cols = list(columns) if columns is not None else list(RECORD_COLUMNS)
        unknown = [c for c in cols if c not in RECORD_COLUMNS and c != "record_id"]
        if unknown:
            raise BadInputError(f"unknown columns {unknown}; records have {['record_id', *RECORD_COLUMNS]}")
        self.columns = [c for c in cols if c != "record_id"]
        self.tier = open_tier(cache, self.repo.store)
        if hasattr(self.tier, "probe"):
            self.tier.probe()  # decide once, here: workers inherit the answer (one warning)
        self.prefetch = int(prefetch)
        self.decoded_cache_bytes = int(decoded_cache_bytes)
        self.epoch = 0
        self.position = 0
        self._resume_pending = False
        self._pid = os.getpid()
        if format not in ("python", "arrow"):
            raise BadInputError(f"format must be 'python' or 'arrow', not {format!r}")
        self.format = format
        self._raw = False  # SnapshotLoader: workers send Arrow, the main process converts
        # SnapshotLoader(features=...): its FeatureJoin. The process that decodes a shard (a
        # worker) joins the shard's rows once (a block of features); batches carry their rows
        self._features: Any = None

    # -- pickling into workers: no live connections travel --------------------------------
    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d["repo"] = None
        return d

    def _store(self):
        if self.repo is None or self._pid != os.getpid():
            self.repo = Repo.open(self.url)
            self._pid = os.getpid()
        return self.repo.store

    # -- state ----------------------------------------------------------------------------
    def order(self, epoch: int | None = None) -> order_mod.EpochOrder:
        """The pure order of an epoch (default: the current one)."""
        return order_mod.EpochOrder(self.sizes, seed=self.seed, epoch=self.epoch if epoch is None else epoch,
                                    shuffle=self.shuffle, window=self.window)

    def plan(self, start: int | None = None) -> order_mod.RankPlan:
        return order_mod.RankPlan(self.num_records, self.position if start is None else start, self.batch_size,
                                  self.world_size, self.rank, self.remainder)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch. The epoch restored by `load_state_dict` keeps its position; any
        other epoch starts at its beginning."""
        epoch = int(epoch)
        if epoch != self.epoch or not self._resume_pending:
            if epoch != self.epoch or self.position >= self.num_records:
                self.position = 0
            self._resume_pending = False
        self.epoch = epoch

    def consumed(self, batch: Batch) -> None:
        """Record that the training loop consumed `batch` (the state moves past it)."""
        self.epoch, self.position = batch.epoch, batch.position
        self._resume_pending = False

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "repo": self.url,
            "commit": self.commit_id,
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
            "num_records": self.num_records,
            "shuffle": self.shuffle,
            "window": self.window,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "remainder": self.remainder,
        }

    def load_state_dict(self, state: dict[str, Any], *, allow_dataset_change: bool = False) -> None:
        """Restore (seed, epoch, position). Refuses another commit unless allowed; then the
        epoch is kept and the position restarts at 0 (positions of another commit mean nothing)."""
        if not isinstance(state, dict) or "commit" not in state or "position" not in state:
            raise BadInputError("not a dataversion loader state (no commit/position)")
        self.epoch = int(state["epoch"])
        if state["commit"] != self.commit_id:
            if not allow_dataset_change:
                raise DataversionError(
                    f"checkpoint was trained on commit {state['commit']} but this loader is pinned to commit {self.commit_id}",
                    hint="open the loader at the checkpoint's commit, or pass allow_dataset_change=True",
                )
            warnings.warn(
                f"dataset changed from commit {state['commit']} to {self.commit_id}: epoch {self.epoch} restarts at position 0",
                RuntimeWarning, stacklevel=2,
            )
            self.position = 0
        else:
            if (state.get("shuffle", self.shuffle), state.get("window", self.window)) != (self.shuffle, self.window):
                warnings.warn("restoring shuffle/window from the checkpoint (they define the order)", RuntimeWarning, stacklevel=2)
            self.seed = int(state["seed"])
            self.shuffle = bool(state.get("shuffle", self.shuffle))
            self.window = int(state.get("window", self.window))
            self.position = min(int(state["position"]), self.num_records)
        self._resume_pending = True

    # -- iteration (runs in each worker) -------------------------------------------------
    def _begin(self) -> order_mod.RankPlan:
        """Where an iteration starts: the restored position, or 0 after a finished epoch."""
        if self.position >= self.num_records and not self._resume_pending:
            self.position = 0
        self._resume_pending = False
        return self.plan()

    def __iter__(self) -> Iterator[Batch]:
        plan = self._begin()
        info = tud.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        reader = _BatchReader(self, self.order())
        try:
            for i in plan.worker_batches(wid, nw):
                raw = reader.batch(plan, i)
                yield raw if self._raw else raw.to_batch(self.format)
        finally:
            reader.close()


class _BatchReader:
    """Builds batches in one process: positions -> (shard, row) -> Arrow take, shards decoded once."""

    def __init__(self, ds: SnapshotDataset, order: order_mod.EpochOrder):
        self.ds, self.order = ds, order
        self.store = ds._store()
        # shard -> (decoded table, its rows' features block (FeatureJoin.block_of) or None)
        self.tables: OrderedDict[int, tuple[pa.Table, np.ndarray | None]] = OrderedDict()
        self.features = ds._features
        self.table_bytes = 0
        self.read_cols = ["record_id", *ds.columns]
        start_shards = order.shards_from(ds.position)
        self.shard_rank = {s: i for i, s in enumerate(start_shards)}
        self.prefetcher = (
            Prefetcher(ds.tier, self.store, [ds.shards[s][0] for s in start_shards], ds.prefetch)
            if ds.prefetch > 0 and start_shards else None
        )

    def close(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.stop()

    def _table(self, s: int) -> pa.Table:
        return self._shard(s)[0]

    def _shard(self, s: int) -> tuple[pa.Table, np.ndarray | None]:
        hit = self.tables.get(s)
        if hit is not None:
            self.tables.move_to_end(s)
            return hit
        shard_id, rows, deleted = self.ds.shards[s]
        if self.prefetcher is not None and s in self.shard_rank:
            self.prefetcher.advance(self.shard_rank[s])
        t = self.ds.tier.read_table(self.store, shard_id).select(self.read_cols)
        if t.num_rows != rows:
            from .errors import CorruptObjectError

            raise CorruptObjectError(f"shard {shard_id} has {t.num_rows} rows, its manifest says {rows}")
        if deleted:
            t = live_rows(t, deleted).combine_chunks()
        # one join per decoded shard (id search + gather): batches then only index its block
        fblock = None
        if self.features is not None:
            fblock = self.features.block_of(self.features.rows_for(ids_as_numpy(t.column(0))))
        self.tables[s] = (t, fblock)
        self.table_bytes += t.nbytes + (fblock.nbytes if fblock is not None else 0)
        while self.table_bytes > self.ds.decoded_cache_bytes and len(self.tables) > 1:
            _, (old, old_fblock) = self.tables.popitem(last=False)
            self.table_bytes -= old.nbytes + (old_fblock.nbytes if old_fblock is not None else 0)
        return t, fblock

    def batch(self, plan: order_mod.RankPlan, i: int) -> _RawBatch:
        flat = self.order.flat_at(plan.batch_positions(i))
        shard, row = self.order.flat_to_shard_row(flat)
        uniq = np.unique(shard)
        fblock = None  # the batch's rows of the shards' features blocks, when features are joined
        if len(uniq) == 1:
            t, shard_fblock = self._shard(int(uniq[0]))
            table = t.take(pa.array(row))
            if shard_fblock is not None:
                fblock = np.take(shard_fblock, row, axis=0)
        else:
            tables = {int(s): self._shard(int(s)) for s in uniq}
            perm = np.argsort(shard, kind="stable")
            parts = [tables[int(s)][0].take(pa.array(row[shard == s])) for s in uniq]
            inverse = np.empty_like(perm)
            inverse[perm] = np.arange(len(perm))
            if self.features is not None:
                fparts = [(tables[int(s)][1], row[shard == s]) for s in uniq]
                fblock = np.take(np.concatenate([np.take(b, r, axis=0) for b, r in fparts if b is not None]),
                                 inverse, axis=0)
            table = pa.concat_tables(parts).combine_chunks().take(pa.array(inverse))
        batch = table.combine_chunks().to_batches()[0] if table.num_rows else pa.RecordBatch.from_pylist([], schema=table.schema)
        return _RawBatch(batch, self.ds.epoch, i, plan.position_after(i), fblock)


class _RawBatch:
    """What a worker sends: one Arrow record batch (pickled as whole buffers) + its place.

    With features joined, `fblock` holds its rows' features (FeatureJoin.block_of: the
    features table row, -1 where it lacks the record, then the values), which the main
    process only turns into lists."""

    __slots__ = ("table", "epoch", "index", "position", "fblock")

    def __init__(self, table: pa.RecordBatch, epoch: int, index: int, position: int,
                 fblock: np.ndarray | None = None):
        self.table, self.epoch, self.index, self.position = table, epoch, index, position
        self.fblock = fblock

    def __reduce__(self):
        return (_RawBatch, (self.table, self.epoch, self.index, self.position, self.fblock))

    def to_batch(self, fmt: str) -> Batch:
        """Python lists ("python") or Arrow arrays ("arrow"); record_id always hex strings."""
        out = Batch()
        raw = ids_as_numpy(self.table.column(0)).tobytes().hex()
        out["record_id"] = [raw[k : k + 32] for k in range(0, len(raw), 32)]
        for name, col in zip(self.table.schema.names[1:], self.table.columns[1:]):
            out[name] = col.to_pylist() if fmt == "python" else col
        out.epoch, out.index, out.position = self.epoch, self.index, self.position
        return out


# ---------------------------------------------------------------------------- loader
class SnapshotLoader:
    """A DataLoader over one commit (resolved once, at construction) with exact resume.

    Arguments beyond the dataset's (see `SnapshotDataset`) go to torch's DataLoader
    (num_workers, prefetch_factor, timeout, multiprocessing_context, worker_init_fn).
    `features=["text_stats:char_count", ...]` adds one batch entry per feature (keyed by the
    reference) from the commit's features table; `loader.features.missing` counts records
    the table lacked (their values are None).
    """

    def __init__(
        self,
        repo: str | Repo,
        ref: str = "main",
        *,
        batch_size: int = 256,
        num_workers: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        columns: list[str] | None = None,
        window: int = order_mod.DEFAULT_WINDOW,
        rank: int | None = None,
        world_size: int | None = None,
        remainder: str = "pad",
        cache: str | ReadTier | None = "auto",
        prefetch: int = 2,
        format: str = "python",
        worker_init_fn: Callable[[int], None] | None = None,
        features: list[str] | None = None,
        **dataloader_kwargs: Any,
    ):
        self.dataset = SnapshotDataset(
            repo, ref, batch_size=batch_size, shuffle=shuffle, seed=seed, columns=columns, window=window,
            rank=rank, world_size=world_size, remainder=remainder, cache=cache, prefetch=prefetch,
            format=format,
        )
        self.dataset._raw = True
        self.num_workers = int(num_workers)
        if dataloader_kwargs.pop("persistent_workers", False):
            raise BadInputError("persistent_workers is not supported: each epoch's workers start at its position")
        self._dl_kwargs = dataloader_kwargs
        self._worker_init_fn = worker_init_fn
        # features=["view:name", ...]: joined per batch from the pinned commit's features
        # table (dataversion.features), never by a call to Feast; absent ids -> null, counted
        self.features = None
        if features:
            from .features import FeatureJoin

            self.features = FeatureJoin.for_commit(self.dataset.repo, self.commit_id, list(features))
            self.features.prepare()
            self.dataset._features = self.features  # ids searched where shards are decoded

    @property
    def commit_id(self) -> str:
        return self.dataset.commit_id

    @property
    def repo(self) -> Repo:
        return self.dataset.repo

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    @property
    def position(self) -> int:
        return self.dataset.position

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict[str, Any], *, allow_dataset_change: bool = False) -> None:
        self.dataset.load_state_dict(state, allow_dataset_change=allow_dataset_change)

    def __len__(self) -> int:
        """Batches left in the current epoch for this rank."""
        ds = self.dataset
        start = ds.position if (ds.position < ds.num_records or ds._resume_pending) else 0
        return ds.plan(start).num_batches

    def __iter__(self) -> Iterator[Batch]:
        ds = self.dataset
        plan = ds._begin()
        if plan.num_batches == 0:
            return
        ds._resume_pending = True  # the workers' copies start where we do
        dl = tud.DataLoader(
            ds,
            batch_size=None,
            collate_fn=_identity,
            num_workers=self.num_workers,
            worker_init_fn=_WorkerInit(os.getpid(), self._worker_init_fn) if self.num_workers else self._worker_init_fn,
            **self._dl_kwargs,
        )
        it = iter(dl)
        ds._resume_pending = False
        try:
            for expected, raw in enumerate(it):
                batch = raw.to_batch(ds.format)
                if self.features is not None:  # joined by the worker: lists (and counts) here
                    self.features.add_block(batch, raw.fblock, ds.format)
                if batch.index != expected or batch.epoch != ds.epoch:
                    raise RuntimeError(f"loader out of order: got batch {batch.index} of epoch {batch.epoch}, expected {expected} of {ds.epoch}")
                ds.consumed(batch)
                yield batch
        finally:
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()


# ---------------------------------------------------------------------------- checkpoints
def _write_atomic(path: str, data: bytes) -> None:
    if path.startswith("s3://"):
        from .stores.s3 import S3Store

        bucket, _, key = path[len("s3://"):].partition("/")
        if not key:
            raise BadInputError(f"checkpoint path {path!r} names no object key")
        S3Store(bucket).put(key, data)  # one PUT: readers see the old or the new object
        return
    path = os.path.abspath(os.path.expanduser(path))
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_bytes(path: str) -> bytes:
    if path.startswith("s3://"):
        from .stores.s3 import S3Store

        bucket, _, key = path[len("s3://"):].partition("/")
        return S3Store(bucket).get(key)
    with open(os.path.expanduser(path), "rb") as f:
        return f.read()


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
    buf = io.BytesIO()
    torch.save({"dataversion": meta, **states}, buf)
    data = buf.getvalue()
    _write_atomic(path, data)
    entry = None
    if loader is not None and record is not False:
        entry = _record_lineage(path, loader, meta, data)
    return {**meta, "lineage": entry}


def _record_lineage(path: str, loader: SnapshotLoader | SnapshotDataset, meta: dict[str, Any], data: bytes) -> dict[str, Any] | None:
    """Rank 0 appends the lineage entry; a failure warns (the checkpoint is already safe)."""
    import hashlib

    from .training import lineage

    ds = loader.dataset if isinstance(loader, SnapshotLoader) else loader
    if ds.rank != 0:
        return None
    def record() -> Any:
        repo = ds.repo if ds.repo is not None and ds._pid == os.getpid() else Repo.open(ds.url)
        return lineage.record_checkpoint(
            repo, meta["loader"], checkpoint=path, run=meta["run"], step=meta["step"],
            sha256=hashlib.sha256(data).hexdigest(), saved_at=meta["saved_at"],
        )

    # Bounded: a preemption notice leaves a minute or two, and an unreachable S3 endpoint
    # would otherwise hold the save for its whole retry budget.
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as FutureTimeout

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
    """The raw checkpoint dict (dataversion metadata under "dataversion")."""
    try:
        data = torch.load(io.BytesIO(_read_bytes(path)), map_location=map_location, weights_only=weights_only)
    except FileNotFoundError:
        raise NotFoundError(f"no checkpoint at {path}") from None
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
