"""A persistent set of record ids for fast membership checks against a whole snapshot.

Two sorted 'S16' arrays, LSM style: a large `base` shared between versions and a small
`delta` copied on write. Adding k ids to a set of n costs O(k + |delta|) until the delta
grows past a threshold, then one merge. Lookups are vectorized binary searches.
"""

from __future__ import annotations

import numpy as np

_MERGE_AT = 65536


def _contains_sorted(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    if len(haystack) == 0 or len(needles) == 0:
        return np.zeros(len(needles), dtype=bool)
    pos = np.searchsorted(haystack, needles)
    pos[pos == len(haystack)] = 0
    return haystack[pos] == needles


class IdSet:
    __slots__ = ("_base", "_delta")

    def __init__(self, base: np.ndarray | None = None, delta: np.ndarray | None = None, *, presorted: bool = False):
        base = np.empty(0, dtype="S16") if base is None else base
        self._base = base if presorted else np.unique(base)
        self._delta = np.empty(0, dtype="S16") if delta is None else delta

    def __len__(self) -> int:
        return len(self._base) + len(self._delta)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """A boolean mask: which of `ids` ('S16') are in the set."""
        found = _contains_sorted(self._base, ids)
        if len(self._delta):
            found |= _contains_sorted(self._delta, ids)
        return found

    def with_added(self, ids: np.ndarray) -> IdSet:
        """A new set that also holds `ids` (this one is unchanged)."""
        if len(ids) == 0:
            return self
        delta = np.union1d(self._delta, ids)
        if len(delta) > _MERGE_AT:
            return IdSet(np.union1d(self._base, delta), presorted=True)
        return IdSet(self._base, delta, presorted=True)

    def with_removed(self, ids: np.ndarray) -> IdSet:
        """A new set without `ids` (rare: rebuilds the arrays)."""
        if len(ids) == 0:
            return self
        merged = np.union1d(self._base, self._delta)
        return IdSet(merged[~_contains_sorted(np.unique(ids), merged)], presorted=True)
