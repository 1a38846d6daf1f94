"""Does the branch hold these record ids? The exact-dedup membership test: a content-tree
lookup (`Repo.contains`), O(len(ids) x log N) reads, never the branch's id column."""

from __future__ import annotations

import numpy as np


def branch_contains(repo, commit_id: str | None, ids: np.ndarray) -> np.ndarray:
    """A bool mask: which of `ids` ('S16') the commit holds (all False without a commit)."""
    if commit_id is None or len(ids) == 0:
        return np.zeros(len(ids), bool)
    return np.asarray(repo.contains(commit_id, ids), bool)
