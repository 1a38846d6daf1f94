"""Does the branch hold these record ids? The exact-dedup membership test.

TEMPORARY SHIM (branch `scale`): the `core` branch gives `Repo.contains(commit_id, ids)`,
an O(change) lookup in the content tree. Until it lands, fall back to the commit's id set
(`Repo.record_ids(commit).contains`), which loads every id of the commit once per process.
Delete the fallback when `Repo.contains` exists everywhere.
"""

from __future__ import annotations

import numpy as np


def branch_contains(repo, commit_id: str | None, ids: np.ndarray) -> np.ndarray:
    """A bool mask: which of `ids` ('S16') the commit holds (all False without a commit)."""
    if commit_id is None or len(ids) == 0:
        return np.zeros(len(ids), bool)
    contains = getattr(repo, "contains", None)
    if contains is not None:
        return np.asarray(contains(commit_id, ids), bool)
    return repo.record_ids(commit_id).contains(ids)  # the shim's fallback (see above)
