"""A read tier from its spec, and what `dataversion cache warm` / `status` do with one."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

from ..errors import BadInputError
from ..shards import shard_key
from .alluxio import AlluxioCache
from .base import ReadTier, StoreRead
from .local import LocalDiskCache


def open_tier(spec: str | ReadTier | None = "auto", store: Any = None) -> ReadTier:
    """A read tier from a spec: "auto" (local disk cache for remote stores, in-place reads
    for file://), "local", "none", "alluxio", or a ReadTier instance (returned as is).
    DATAVERSION_CACHE overrides "auto"."""
    if isinstance(spec, ReadTier):
        return spec
    spec = spec or "auto"
    if spec == "auto":
        spec = os.environ.get("DATAVERSION_CACHE", "auto")
    if spec == "auto":
        spec = "local"
    if spec == "none":
        return StoreRead()
    if spec == "local":
        return LocalDiskCache()
    if spec == "alluxio":
        return AlluxioCache()
    raise BadInputError(f"unknown cache tier {spec!r}", hint="use auto, local, none or alluxio")


def warm(repo: Any, ref: str, tier: ReadTier | str | None = "local") -> dict[str, Any]:
    """Preload every shard of a snapshot into a tier. Returns counts and timing."""
    tier = open_tier(tier, repo.store)
    commit_id = repo.resolve(ref)
    shards = repo.shard_table(repo.read_packing(commit_id))
    t0 = time.perf_counter()
    fetched = 0
    nbytes = 0
    for s in _unique(shards):
        if tier.ensure(repo.store, s.id):
            fetched += 1
            nbytes += s.size
    purged = purge(repo, tier)["purged"]
    # a shard on a local disk is read in place: held whatever the tier says
    held = [True if repo.store.local_path(shard_key(s.id)) is not None else tier.contains(s.id) for s in _unique(shards)]
    return {
        "commit": commit_id,
        "tier": tier.name,
        "shards": len({s.id for s in shards}),
        "fetched": fetched,
        "already_cached": len({s.id for s in shards}) - fetched,
        "bytes_fetched": nbytes,
        "purged": purged,
        # what the tier holds once done (None: it cannot tell); fewer than `shards` when the
        # snapshot is larger than the tier: the first ones were evicted for the last
        "held": None if None in held else sum(held),
        "bytes": sum(s.size for s in _unique(shards)),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def purge(repo: Any, tier: ReadTier | str | None = "local") -> dict[str, Any]:
    """Drop from a tier every shard an erasure of `repo` replaced (no commit names it any
    more, and its bytes hold erased payloads). Returns how many it found cached."""
    from ..porcelain.erase import erased_shards, erasures

    tier = open_tier(tier, repo.store)
    replaced = set(erased_shards(erasures(repo)))
    return {"tier": tier.name, "replaced_shards": len(replaced), "purged": tier.purge(repo.store, replaced) if replaced else 0}


def _unique(shards: Iterable[Any]) -> list[Any]:
    seen: set[str] = set()
    out = []
    for s in shards:
        if s.id not in seen:
            seen.add(s.id)
            out.append(s)
    return out


def status(tier: ReadTier | str | None = "local") -> dict[str, Any]:
    """Size, hit rate and evictions of a tier (what `dataversion cache status` prints)."""
    return open_tier(tier).status()
