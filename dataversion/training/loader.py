"""`SnapshotLoader`: torch's DataLoader over a `SnapshotDataset`, with exact O(1) resume.

Workers build whole batches and send one Arrow batch per step; the main process turns it
into a `Batch` and moves the state past it. Workers die with their parent
(`lifecycle.die_with_parent`), so a SIGKILLed trainer leaves no process behind.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch.utils.data as tud

from ..errors import BadInputError
from ..lifecycle import die_with_parent
from ..repo import Repo
from .batches import Batch
from .dataset import DATASET_OPTIONS, SnapshotDataset
from .preemption import quiet_worker_signals


class _WorkerInit:
    """worker_init_fn: die with the parent, then the user's own init."""

    def __init__(self, parent_pid: int, user_fn: Callable[[int], None] | None):
        self.parent_pid, self.user_fn = parent_pid, user_fn

    def __call__(self, worker_id: int) -> None:
        die_with_parent(self.parent_pid)
        # the objects inherited from the parent stay out of this worker's collections: a
        # collection writes to every object it visits, copying the parent's pages (fork COW)
        gc.freeze()
        # A SIGTERM to the process group is the trainer's to handle (PreemptionHandler):
        # a worker that died of it would fail the trainer's next step before it could save.
        quiet_worker_signals()
        _worker_memory_pool()
        if self.user_fn is not None:
            self.user_fn(worker_id)


def _worker_memory_pool() -> None:
    """Arrow allocations of this worker from jemalloc, where pyarrow has it. A worker's
    allocations are short-lived blocks and batches of varied sizes; mimalloc (pyarrow's
    default) kept ~45 MB more of freed pages per worker than jemalloc in the loader benchmark
    (peak PSS). The parent's pool is the user's business and stays as it is."""
    import pyarrow as pa

    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except (NotImplementedError, AttributeError):  # a pyarrow built without jemalloc
        pass


def _identity(x: Any) -> Any:
    return x


class SnapshotLoader:
    """A DataLoader over one commit (resolved once, at construction) with exact resume.

    Dataset options (batch_size, shuffle, seed, columns, window, rank, world_size, remainder,
    cache, prefetch, decoded_cache_bytes, format, decode, transform, batch_transform,
    sample_rate, image_mode, on_decode_error) go to `SnapshotDataset`, where they are
    declared and documented once; every other keyword goes to torch's DataLoader
    (pin_memory, prefetch_factor, timeout, multiprocessing_context; persistent_workers is
    refused). `pin_memory=True` pins decoded batches' tensors in torch's pin thread when an
    accelerator is present (torch itself turns pinning off, with a warning, on CPU-only
    machines).
    The loader's own: `num_workers`; `worker_init_fn`, run in each worker once it is tied to
    its parent; `features=["text_stats:char_count", ...]` adds one batch entry per feature
    (keyed by the reference) from the commit's features table, and
    `loader.features.missing` counts records the table lacked (their values are None).
    """

    def __init__(
        self,
        repo: str | Repo,
        ref: str = "main",
        *,
        num_workers: int = 0,
        worker_init_fn: Callable[[int], None] | None = None,
        features: list[str] | None = None,
        **options: Any,
    ):
        dataset_options = {name: options.pop(name) for name in DATASET_OPTIONS & options.keys()}
        if options.pop("persistent_workers", False):
            raise BadInputError("persistent_workers is not supported: each epoch's workers start at its position")
        self.dataset = SnapshotDataset(repo, ref, **dataset_options)
        self.dataset._raw = True
        self.num_workers = int(num_workers)
        self._dl_kwargs = options  # the rest: torch's DataLoader
        self._worker_init_fn = worker_init_fn
        # features=["view:name", ...]: joined per batch from the pinned commit's features
        # table (dataversion.features), never by a call to Feast; absent ids -> null, counted
        self.features = None
        if features:
            from ..features import FeatureJoin

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
    def decode_skipped(self) -> int:
        """Records left out of the batches consumed so far because they did not decode
        (`on_decode_error="skip"`); their ids are in each batch's `skipped`."""
        return self.dataset.decode_skipped

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
        """Batches left in the current epoch for this rank; once it is finished (and not just
        restored), those of the next pass, which starts it again."""
        ds = self.dataset
        start = 0 if ds.epoch_finished() and not ds._resume_pending else ds.position  # as `_begin`
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
