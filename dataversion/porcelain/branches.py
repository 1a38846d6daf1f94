"""Porcelain: branches, tags, rollback (reset), the reflog and revert."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..errors import BadInputError, NotFoundError
from ..records import RECORD_SCHEMA
from ..refs import HEADS, TAGS, validate_ref_name
from ..writer import DEFAULT_BRANCH, CommitResult

if TYPE_CHECKING:
    from ..repo import Repo


def branches(repo: Repo) -> dict[str, str]:
    return {k[len(HEADS):]: v for k, v in repo.refs.list(HEADS).items()}

def tags(repo: Repo) -> dict[str, str]:
    return {k[len(TAGS):]: v for k, v in repo.refs.list(TAGS).items()}

def create_branch(repo: Repo, name: str, ref: str) -> str:
    commit_id = repo.resolve(ref)
    repo.refs.set_if_equals(repo.branch_ref(name), None, commit_id, reason=f"branch: created from {ref}")
    return commit_id

def delete_branch(repo: Repo, name: str) -> str:
    return repo.refs.delete(repo.branch_ref(name), reason="branch: deleted")

def create_tag(repo: Repo, name: str, ref: str) -> str:
    commit_id = repo.resolve(ref)
    repo.refs.set_if_equals(TAGS + validate_ref_name(name), None, commit_id, reason=f"tag: {ref}")
    return commit_id

def reset(repo: Repo, branch: str, ref: str) -> tuple[str | None, str]:
    """Move `branch` to `ref` (rollback); recorded in the reflog. Returns (old, new)."""
    target = repo.resolve(ref)
    full = repo.branch_ref(branch)
    current = repo.refs.read(full)
    if current is None:
        raise NotFoundError(f"branch {branch} does not exist")
    repo.refs.set_if_equals(full, current, target, reason=f"reset: moving to {ref}")
    return current.commit_id, target

def reflog(repo: Repo, branch: str | None = None) -> list[dict[str, Any]]:
    return [e.to_dict() for e in repo.refs.reflog(repo.branch_ref(branch) if branch else None)]

def revert(repo: Repo, ref: str, *, branch: str = DEFAULT_BRANCH, message: str = "") -> CommitResult:
    """A new commit on `branch` that undoes what `ref` changed relative to its first parent."""
    target = repo.resolve(ref)
    parents = repo.read_commit(target).parents
    if not parents:
        raise BadInputError(f"cannot revert {ref}: it is a root commit", hint="use `dataversion rm` or reset instead")
    d = repo.diff(parents[0], target, records=True)
    # records removed or changed by `ref` come back as they were in its parent
    back = [bytes.fromhex(r["record_id"]) for r in d["records"]["removed"] + d["records"]["changed"]]
    restore = None
    if back:
        parts = list(repo.read_rows(parents[0], list(RECORD_SCHEMA.names), repo.locate(parents[0], np.array(back, dtype="S16"))))
        restore = pa.concat_tables(parts) if parts else None
    remove = np.array([bytes.fromhex(r["record_id"]) for r in d["records"]["added"] + d["records"]["changed"]], dtype="S16")
    return repo.commit(
        restore,
        branch=branch,
        message=message or f"revert {target[:12]}",
        remove_ids=remove if len(remove) else None,
        provenance={"reverts": target},
    )
