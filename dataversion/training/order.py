"""The loader's sample order: a pure function of (block sizes, seed, epoch), no torch, no I/O.

The "shards" this module orders are the commit's content blocks (`blocks.py`: id ranges of
the content tree, a function of the content root), never the packing's Parquet shards: the
order of a commit is the same whatever its packing. Names below say shard/manifest for the
units and their order; read them as block/id order.

Vocabulary
- *flat index*: a record's place in the commit's id order (blocks in id order, records of
  each block in id order). `flat_to_shard_row` turns it into (block, row in the block).
- *position*: how many samples of an epoch have been consumed globally, across all ranks and
  workers. A loader's state is (commit, seed, epoch, position): resuming at a position with a
  different world size or number of workers continues the same global sequence.

The order of an epoch (`EpochOrder`):
1. shuffle the shard order (seeded by seed, epoch);
2. concatenate the shards' live rows in that order;
3. cut the concatenation into consecutive windows of `window` samples and shuffle inside
   each window (seeded by seed, epoch, window number).
So reads stay sequential at the scale of a window (one or two shards at a time), and the
sample at any position is found in O(window), independent of the position: seeking is O(1)
in the position. Randomness comes only from PCG64's raw bit stream (`random_raw`) through a
argsort of unique keys, so the order is the same on every machine and NumPy version.

Distribution (`RankPlan`): from a start position `s`, global batch g covers positions
[s + g*B*W, s + (g+1)*B*W) and rank r takes the r-th slice of B of it. After every rank
consumed k batches, the consumed positions are exactly [0, s + k*B*W): a prefix, whatever
W was before. The remainder (the last R < B*W positions of the epoch) follows a policy:
- "pad" (default): each rank gets ceil(R/W) of them in one last, smaller batch; ranks that
  run short are padded with repeats of the epoch's first samples so all ranks take the same
  number of steps. With world size 1 this is just a smaller last batch, nothing repeated.
- "drop": the remainder is skipped this epoch (every batch is full and all ranks take the
  same number of steps). It is never consumed: a finished epoch's position stays below the
  epoch's size, so "finished" is "no batch left" (`RankPlan.num_batches == 0`), not
  "position == size".
Workers inside a rank take the rank's batches round-robin (batch i to worker i % nw), which
is the order a torch DataLoader returns them in: the order does not depend on num_workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_WINDOW = 16384
REMAINDER_POLICIES = ("pad", "drop")

_MAX_PERMUTATION = 1 << 24
_TAG_SHARDS = 1
_TAG_WINDOW = 2


def _permutation(seed: int, epoch: int, tag: int, index: int, n: int) -> np.ndarray:
    """A permutation of range(n) determined only by its arguments (stable across NumPy versions)."""
    if n > _MAX_PERMUTATION:
        raise ValueError(f"cannot permute more than {_MAX_PERMUTATION} items")
    bits = np.random.PCG64(np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, epoch, tag, index]))
    # Random high bits, the index in the low bits: keys are unique, so every correct sort
    # (whatever NumPy picks on this CPU) gives the same permutation.
    keys = (bits.random_raw(n) >> np.uint64(24) << np.uint64(24)) | np.arange(n, dtype=np.uint64)
    return np.argsort(keys)


@dataclass(frozen=True)
class EpochOrder:
    """The global sample order of one epoch over shards with the given live row counts.

    `sizes` are live rows per shard in manifest order. With `shuffle=False` the order is the
    manifest order. `window` bounds how far apart a sample may move (in samples).
    """

    sizes: tuple[int, ...]
    seed: int = 0
    epoch: int = 0
    shuffle: bool = True
    window: int = DEFAULT_WINDOW
    _cache: dict = field(default_factory=dict, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not 1 <= self.window <= _MAX_PERMUTATION:
            raise ValueError(f"window must be in [1, {_MAX_PERMUTATION}]")
        if any(s < 0 for s in self.sizes):
            raise ValueError("shard sizes must be >= 0")

    @property
    def num_samples(self) -> int:
        return int(sum(self.sizes))

    def __len__(self) -> int:
        return self.num_samples

    # -- shard level ---------------------------------------------------------------------
    @property
    def manifest_offsets(self) -> np.ndarray:
        """Flat index of each shard's first row (manifest order), plus the total at the end."""
        if "moff" not in self._cache:
            self._cache["moff"] = np.concatenate([[0], np.cumsum(np.asarray(self.sizes, dtype=np.int64))])
        return self._cache["moff"]

    @property
    def shard_order(self) -> np.ndarray:
        """Shard indices (into the manifest) in the order this epoch reads them."""
        if "sorder" not in self._cache:
            n = len(self.sizes)
            order = _permutation(self.seed, self.epoch, _TAG_SHARDS, 0, n) if self.shuffle else np.arange(n)
            self._cache["sorder"] = order.astype(np.int64)
        return self._cache["sorder"]

    @property
    def _concat_offsets(self) -> np.ndarray:
        """Start of each shard (in `shard_order`) in the shuffled concatenation, plus the total."""
        if "coff" not in self._cache:
            sizes = np.asarray(self.sizes, dtype=np.int64)[self.shard_order]
            self._cache["coff"] = np.concatenate([[0], np.cumsum(sizes)])
        return self._cache["coff"]

    def _window_perm(self, w: int) -> np.ndarray:
        n = min(self.window, self.num_samples - w * self.window)
        if not self.shuffle:
            return np.arange(n)
        key = ("w", w)
        perm = self._cache.get(key)
        if perm is None:
            perm = _permutation(self.seed, self.epoch, _TAG_WINDOW, w, n)
            if len(self._cache) > 64:  # keep memory bounded on long scans
                for k in [k for k in self._cache if isinstance(k, tuple)][:32]:
                    del self._cache[k]
            self._cache[key] = perm
        return perm

    # -- sample level --------------------------------------------------------------------
    def _concat_to_flat(self, q: np.ndarray) -> np.ndarray:
        coff = self._concat_offsets
        k = np.searchsorted(coff, q, side="right") - 1
        shard = self.shard_order[k]
        return self.manifest_offsets[shard] + (q - coff[k])

    def flat_at(self, positions: np.ndarray | Sequence[int]) -> np.ndarray:
        """Flat indices of the samples at these positions (each in [0, num_samples)).

        Cost: O(len(positions) + window * windows touched); independent of where they are.
        """
        p = np.asarray(positions, dtype=np.int64)
        if p.size and (p.min() < 0 or p.max() >= self.num_samples):
            raise IndexError(f"position out of range [0, {self.num_samples})")
        if not self.shuffle:
            return self._concat_to_flat(p)
        w = p // self.window
        if p.size and w[0] == w[-1] and (p.size == 1 or (np.diff(w) == 0).all()):
            w0 = int(w[0])
            return self._concat_to_flat(w0 * self.window + self._window_perm(w0)[p - w0 * self.window])
        q = np.empty_like(p)
        for wi in np.unique(w):
            sel = w == wi
            q[sel] = wi * self.window + self._window_perm(int(wi))[p[sel] - wi * self.window]
        return self._concat_to_flat(q)

    def full(self) -> np.ndarray:
        """The whole epoch: flat index of the sample at every position (vectorized)."""
        n = self.num_samples
        if n == 0:
            return np.empty(0, dtype=np.int64)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        q = np.empty(n, dtype=np.int64)
        for wi in range(-(-n // self.window)):
            base = wi * self.window
            q[base : base + self.window] = base + _permutation(self.seed, self.epoch, _TAG_WINDOW, wi, min(self.window, n - base))
        return self._concat_to_flat(q)

    def positions_of(self) -> np.ndarray:
        """Inverse of `full()`: the position of every flat index in this epoch."""
        order = self.full()
        pos = np.empty_like(order)
        pos[order] = np.arange(len(order), dtype=np.int64)
        return pos

    def flat_to_shard_row(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(manifest shard index, live row within the shard) of flat indices."""
        flat = np.asarray(flat, dtype=np.int64)
        moff = self.manifest_offsets
        shard = np.searchsorted(moff, flat, side="right") - 1
        return shard, flat - moff[shard]

    def shard_needed_until(self) -> np.ndarray:
        """For each manifest shard, the first position from which no later position of the
        epoch reads it: the start of the window after the one holding its last sample in the
        shuffled concatenation. A reader past it (positions only grow) may release the shard."""
        if "until" not in self._cache:
            ends = np.empty(len(self.sizes), dtype=np.int64)
            ends[self.shard_order] = self._concat_offsets[1:]
            if self.shuffle:  # the window holding its last sample may place it anywhere in it
                ends = (np.maximum(ends - 1, 0) // self.window + 1) * self.window
            self._cache["until"] = ends
        return self._cache["until"]

    def shards_from(self, position: int) -> list[int]:
        """Manifest shard indices in the order an epoch resumed at `position` first needs them."""
        if position >= self.num_samples:
            return []
        # a window may reach back into the shard before the one holding `position`
        start = max(0, (position // self.window) * self.window)
        k = int(np.searchsorted(self._concat_offsets, start, side="right") - 1)
        return [int(s) for s in self.shard_order[k:] if self.sizes[s] > 0]


@dataclass(frozen=True)
class RankPlan:
    """Which positions one rank reads, batch by batch, from `start` to the end of an epoch."""

    num_samples: int
    start: int
    batch_size: int
    world_size: int = 1
    rank: int = 0
    remainder: str = "pad"

    def __post_init__(self) -> None:
        if self.remainder not in REMAINDER_POLICIES:
            raise ValueError(f"remainder must be one of {REMAINDER_POLICIES}, not {self.remainder!r}")
        if self.batch_size < 1 or self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"bad batch_size/world_size/rank: {self.batch_size}/{self.world_size}/{self.rank}")
        if not 0 <= self.start <= self.num_samples:
            raise ValueError(f"start {self.start} outside [0, {self.num_samples}]")

    @property
    def _step(self) -> int:
        return self.batch_size * self.world_size

    @property
    def full_batches(self) -> int:
        return (self.num_samples - self.start) // self._step

    @property
    def tail(self) -> int:
        """Samples left after the full global batches (the remainder)."""
        return (self.num_samples - self.start) % self._step

    @property
    def num_batches(self) -> int:
        """Batches this rank yields (the same on every rank)."""
        return self.full_batches + (1 if self.tail and self.remainder == "pad" else 0)

    def batch_positions(self, i: int) -> np.ndarray:
        """Positions of this rank's batch i (padding wraps to the epoch's first positions)."""
        if not 0 <= i < self.num_batches:
            raise IndexError(f"batch {i} out of range [0, {self.num_batches})")
        if i < self.full_batches:
            a = self.start + i * self._step + self.rank * self.batch_size
            return np.arange(a, a + self.batch_size, dtype=np.int64)
        c = -(-self.tail // self.world_size)
        a = self.start + self.full_batches * self._step + self.rank * c
        return np.arange(a, a + c, dtype=np.int64) % self.num_samples

    def position_after(self, i: int) -> int:
        """The global position once every rank has consumed its batches 0..i."""
        if i + 1 < self.num_batches or (i + 1 == self.num_batches and i < self.full_batches):
            return self.start + (i + 1) * self._step
        return self.num_samples if self.remainder == "pad" else self.start + self.full_batches * self._step

    def worker_batches(self, worker: int, num_workers: int, first: int = 0) -> range:
        """The batch indices a DataLoader worker produces (round-robin, as torch consumes them)."""
        return range(first + worker, self.num_batches, max(1, num_workers))


def consumed_mask(
    sizes: Sequence[int],
    *,
    seed: int,
    epoch: int,
    position: int,
    world_size: int = 1,
    batch_size: int | None = None,
    shuffle: bool = True,
    window: int = DEFAULT_WINDOW,
    remainder: str = "pad",
) -> np.ndarray:
    """Which records (flat indices, manifest order) a job had consumed at (epoch, position).

    Every record was consumed by the end of any earlier epoch (minus a "drop" remainder,
    which differs per epoch, so earlier epochs are scanned when remainder is "drop"; with
    "pad" every record is seen each epoch). In the current epoch, the records at positions
    < `position` were consumed. Positions are global, so `world_size` and `batch_size` do not
    change the answer for "pad"; they are accepted to identify the plan. Vectorized: one
    pass over the epoch's order.
    """
    order = EpochOrder(tuple(int(s) for s in sizes), seed=seed, epoch=epoch, shuffle=shuffle, window=window)
    n = order.num_samples
    seen = np.zeros(n, dtype=bool)
    if epoch > 0:
        if remainder == "pad":
            seen[:] = True
            return seen
        for e in range(epoch):
            prev = EpochOrder(order.sizes, seed=seed, epoch=e, shuffle=shuffle, window=window)
            step = (batch_size or 1) * world_size
            seen[prev.full()[: n - n % step]] = True
    p = min(max(int(position), 0), n)
    if p:
        seen[order.full()[:p]] = True
    return seen


def consumed_matrix(
    sizes: Sequence[int],
    checkpoints: Sequence[dict],
    *,
    shuffle: bool = True,
    window: int = DEFAULT_WINDOW,
) -> np.ndarray:
    """For many checkpoints over one commit: a (len(checkpoints), num_records) bool matrix.

    Each checkpoint is a dict with seed, epoch, position (and optionally world_size,
    batch_size, remainder). Orders are computed once per (seed, epoch), positions compared
    vectorized: the rank of each record in the epoch order is below the position.
    """
    sizes = tuple(int(s) for s in sizes)
    n = sum(sizes)
    out = np.zeros((len(checkpoints), n), dtype=bool)
    rank_of: dict[tuple[int, int], np.ndarray] = {}
    for i, c in enumerate(checkpoints):
        seed, epoch = int(c["seed"]), int(c["epoch"])
        if c.get("remainder", "pad") != "pad" and epoch > 0:
            out[i] = consumed_mask(sizes, seed=seed, epoch=epoch, position=int(c["position"]),
                                   world_size=int(c.get("world_size", 1)), batch_size=c.get("batch_size"),
                                   shuffle=shuffle, window=window, remainder=c["remainder"])
            continue
        if epoch > 0:
            out[i] = True
            continue
        key = (seed, epoch)
        if key not in rank_of:
            rank_of[key] = EpochOrder(sizes, seed=seed, epoch=epoch, shuffle=shuffle, window=window).positions_of()
        out[i] = rank_of[key] < int(c["position"])
    return out
