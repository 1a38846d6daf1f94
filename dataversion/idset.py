"""A persistent set of record ids for fast membership checks against a whole snapshot.

Two sorted 'S16' arrays, LSM style: a large `base` shared between versions and a small
`delta` copied on write. Adding k ids to a set of n costs O(k + |delta|) until the delta
grows past a threshold, then one merge. Lookups are vectorized binary searches.
"""

from __future__ import annotations

import numpy as np

from .tree import contains_sorted

_MERGE_AT = 65536


def _sorted_unique(ids: np.ndarray) -> np.ndarray:
    if len(ids) < 2 or (ids[1:] > ids[:-1]).all():
        return ids
    from .shards import sort_order

    s = ids[sort_order(ids)]
    return s[np.concatenate([[True], s[1:] != s[:-1]])]


def _merge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Union of two sorted unique arrays (a stable sort of two runs is a linear merge)."""
    if not len(a):
        return b
    if not len(b):
        return a
    s = np.sort(np.concatenate([a, b]), kind="stable")
    return s[np.concatenate([[True], s[1:] != s[:-1]])]


class IdSet:
    __slots__ = ("_base", "_delta")

    def __init__(self, base: np.ndarray | None = None, delta: np.ndarray | None = None, *, presorted: bool = False):
        base = np.empty(0, dtype="S16") if base is None else base
        self._base = base if presorted else _sorted_unique(base)
        self._delta = np.empty(0, dtype="S16") if delta is None else delta

    def __len__(self) -> int:
        return len(self._base) + len(self._delta)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """A boolean mask: which of `ids` ('S16') are in the set."""
        found = contains_sorted(self._base, ids)
        if len(self._delta):
            found |= contains_sorted(self._delta, ids)
        return found

    def with_added(self, ids: np.ndarray) -> IdSet:
        """A new set that also holds `ids` (this one is unchanged)."""
        if len(ids) == 0:
            return self
        ids = _sorted_unique(ids)
        if len(ids) > _MERGE_AT and not len(self._base) and not len(self._delta):
            return IdSet(ids, presorted=True)
        delta = _merge(self._delta, ids)
        if len(delta) > _MERGE_AT:
            return IdSet(_merge(self._base, delta), presorted=True)
        return IdSet(self._base, delta, presorted=True)

    def with_removed(self, ids: np.ndarray) -> IdSet:
        """A new set without `ids` (rare: rebuilds the arrays)."""
        if len(ids) == 0:
            return self
        merged = np.union1d(self._base, self._delta)
        return IdSet(merged[~contains_sorted(np.unique(ids), merged)], presorted=True)
