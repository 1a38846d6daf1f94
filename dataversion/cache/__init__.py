"""The read tier: where the loader gets shard bytes from.

Shards are immutable and named by the hash of their bytes, so a cached copy never needs
invalidation: the only questions are room (LRU eviction) and integrity (the bytes must hash
to the shard id; a corrupt copy is re-fetched once, then CorruptObjectError names the shard).

Tiers (all picklable: DataLoader workers receive them and open their own connections):
- `StoreRead` (`base`): no cache. For file:// stores the shard file is read in place.
- `LocalDiskCache` (`local`, the default): shards and their decoded Arrow copies on local
  disk, shared by every process of the machine, size-bounded with LRU eviction.
- `AlluxioCache` (`alluxio`): reads through Alluxio workers (`alluxiofs`). When they cannot
  be reached, it warns once and reads from the object store instead.

`Prefetcher` (`prefetch`) brings the next shards of an order into a tier in the background.
`open_tier(spec)` builds a tier from "auto" | "local" | "none" | "alluxio" | a tier;
`warm(repo, ref, tier)` and `status(tier)` are what `dataversion cache` prints (`ops`).
"""

from __future__ import annotations

from .alluxio import AlluxioCache
from .base import ReadTier, StoreRead, fetch_verified
from .local import DEFAULT_MAX_BYTES, LocalDiskCache, default_cache_dir
from .ops import open_tier, purge, status, warm
from .prefetch import Prefetcher

__all__ = [
    "AlluxioCache", "DEFAULT_MAX_BYTES", "LocalDiskCache", "Prefetcher", "ReadTier", "StoreRead",
    "default_cache_dir", "fetch_verified", "open_tier", "purge", "status", "warm",
]
