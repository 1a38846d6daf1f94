"""`SnapshotDataset`: an IterableDataset over one commit, in the pure order, with exact state.

The order of samples is `order` over the commit's content-tree blocks (`blocks`): a pure
function of (content root, seed, epoch), whatever the packing; the state is
(commit, seed, epoch, position) where position counts samples consumed globally. Each
iteration (in each DataLoader worker) builds whole batches with `batches.BatchReader`.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.utils.data as tud

from ..cache import ReadTier, open_tier
from ..errors import BadInputError, DataversionError
from ..repo import Repo
from . import order as order_mod
from .batches import Batch, BatchReader
from .blocks import block_sizes
from .decode import DecodeOptions
from .samples import SamplePipeline
from .state import STATE_FORMAT, validate_loader_state

RECORD_COLUMNS = ("modality", "source", "label", "meta", "text", "data")


def _distributed(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None or world_size is not None:
        world = 1 if world_size is None else int(world_size)
        return (0 if rank is None else int(rank)), world
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class SnapshotDataset(tud.IterableDataset):
    """An IterableDataset over one commit that yields whole `Batch`es in the pure order.

    Use with `DataLoader(dataset, batch_size=None, collate_fn=lambda b: b)`; after each batch
    the training loop consumed, call `dataset.consumed(batch)` so that `state_dict()` is
    exact (`SnapshotLoader` does both for you). Every `__iter__` starts at the current
    (epoch, position).

    Sample pipeline (run in the workers, `samples`): `decode=True` turns payloads into
    tensors (image: uint8 CHW, audio: float32 (channels, frames), resampled to `sample_rate`
    when given; text stays a str; `image_mode` "RGB" by default), adding the "modality" and
    "data" columns to those read; `transform(sample, rng)` gets each sample as a dict and a
    `torch.Generator` seeded from (seed, epoch, global position) only (`randomness`), and
    returns the dict; `batch_transform(batch, rng)` likewise per collated batch. Batches are
    then collated to tensors where shapes agree (policy in `samples`). A record that does not
    decode raises `RecordDecodeError` with its id (`on_decode_error="raise"`) or is skipped
    and counted in `decode_skipped` ("skip").
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
        decode: bool = False,
        transform: Any = None,
        batch_transform: Any = None,
        sample_rate: int | None = None,
        image_mode: str | None = "RGB",
        on_decode_error: str = "raise",
    ):
        super().__init__()
        self.repo = repo if isinstance(repo, Repo) else Repo.open(repo)
        self.url = self.repo.url
        self.ref = ref
        self.commit_id = self.repo.resolve(ref)  # NotFoundError here, never mid-epoch
        self.packing = self.repo.read_packing(self.commit_id)  # checked against the commit's root, here
        # the order is over content-tree blocks: a function of the content root, not of packing
        self.sizes = block_sizes(self.repo, self.commit_id)
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
        if decode:  # what decoding needs, whatever was asked
            cols += [c for c in ("modality", "data") if c not in cols]
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
        self.pipeline: SamplePipeline | None = None
        if decode or transform is not None or batch_transform is not None:
            if format != "python":
                raise BadInputError("decode/transform/batch_transform need format='python' (they make tensors)")
            self.pipeline = SamplePipeline(
                decode=decode, transform=transform, batch_transform=batch_transform, on_decode_error=on_decode_error,
                options=DecodeOptions(image_mode=image_mode, sample_rate=None if sample_rate is None else int(sample_rate)),
            )
        self.decode_skipped = 0  # records left out of consumed batches (on_decode_error="skip")
        self._raw = False  # SnapshotLoader: workers send Arrow, the main process converts
        # SnapshotLoader(features=...): its FeatureJoin. The process that decodes a shard (a
        # worker) joins the shard's rows once (a block of features); batches carry their rows
        self._features: Any = None

    # -- pickling into workers: no live connections travel --------------------------------
    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d["repo"] = None
        return d

    def open_repo(self) -> Repo:
        """The repository, opened in this process (a copy pickled into a worker reopens it)."""
        if self.repo is None or self._pid != os.getpid():
            self.repo = Repo.open(self.url)
            self._pid = os.getpid()
        return self.repo

    # -- state ----------------------------------------------------------------------------
    def order(self, epoch: int | None = None) -> order_mod.EpochOrder:
        """The pure order of an epoch (default: the current one)."""
        return order_mod.EpochOrder(self.sizes, seed=self.seed, epoch=self.epoch if epoch is None else epoch,
                                    shuffle=self.shuffle, window=self.window)

    def plan(self, start: int | None = None) -> order_mod.RankPlan:
        return order_mod.RankPlan(self.num_records, self.position if start is None else start, self.batch_size,
                                  self.world_size, self.rank, self.remainder)

    def epoch_finished(self) -> bool:
        """Whether the current epoch has nothing left for this rank from the position: "pad"
        at num_records; "drop" once less than one global batch (batch_size * world_size) is
        left, the dropped tail that is never consumed, so the position stays below
        num_records. O(1)."""
        return self.plan().num_batches == 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch. The epoch restored by `load_state_dict` keeps its position; any
        other epoch, or this one once finished (`epoch_finished`), starts at its beginning."""
        epoch = int(epoch)
        if epoch != self.epoch or not self._resume_pending:
            if epoch != self.epoch or self.epoch_finished():
                self.position = 0
            self._resume_pending = False
        self.epoch = epoch

    def consumed(self, batch: Batch) -> None:
        """Record that the training loop consumed `batch` (the state moves past it)."""
        self.epoch, self.position = batch.epoch, batch.position
        self.decode_skipped += len(batch.skipped)
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
        epoch is kept and the position restarts at 0 (positions of another commit mean nothing).
        A malformed state (`state.validate_loader_state`) is a BadInputError, nothing restored."""
        state = validate_loader_state(state)
        self.epoch = int(state["epoch"])
        if state["commit"] != self.commit_id and self.open_repo()._upgraded_id(state["commit"]) == self.commit_id:
            # a checkpoint from before `dataversion upgrade`: same records, but format 2 orders
            # them over content blocks, so its position indexes another sequence
            warnings.warn(f"checkpoint names format-1 commit {state['commit']}, now {self.commit_id}; "
                          "the sample order changed with the format upgrade", RuntimeWarning, stacklevel=2)
            state = {**state, "commit": self.commit_id}
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
        """Where an iteration starts: the restored position, or 0 after a finished epoch
        (`epoch_finished`: with "drop", the position a finished epoch ends at is below
        num_records). A restored finished epoch yields nothing once, as a restored unfinished
        one yields only its rest."""
        if not self._resume_pending and self.epoch_finished():
            self.position = 0
        self._resume_pending = False
        return self.plan()

    def __iter__(self) -> Iterator[Batch]:
        plan = self._begin()
        info = tud.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        reader = BatchReader(self, self.order())
        try:
            for i in plan.worker_batches(wid, nw):
                raw = reader.batch(plan, i)
                if self.pipeline is not None:
                    raw = self.pipeline.run(raw, raw.positions, self.seed)
                yield raw if self._raw else raw.to_batch(self.format)
        finally:
            reader.close()


# The keyword options a SnapshotLoader hands to its dataset: declared once, above.
DATASET_OPTIONS = frozenset(
    name for name, p in inspect.signature(SnapshotDataset.__init__).parameters.items() if p.kind is p.KEYWORD_ONLY
)
