"""Porcelain: branches, tags, rollback (reset), the reflog and revert."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..errors import BadInputError, ConflictError, DataversionError, NotFoundError
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
    """Create branch `name` at `ref`. ConflictError "branch NAME already exists (at ID)" if it
    does (as git: `reset` moves a branch), whether it existed before or was created meanwhile."""
    full = repo.branch_ref(name)
    existing = repo.refs.read(full)
    if existing is not None:
        raise _branch_exists(name, existing.commit_id)
    commit_id = repo.resolve(ref)
    try:
        repo.refs.set_if_equals(full, None, commit_id, reason=f"branch: created from {ref}")
    except ConflictError:
        existing = repo.refs.read(full)
        if existing is not None:  # created by another writer since the read above
            raise _branch_exists(name, existing.commit_id) from None
        raise
    return commit_id

def _branch_exists(name: str, commit_id: str) -> ConflictError:
    return ConflictError(
        f"branch {name} already exists (at {commit_id[:12]})",
        hint=f"`dataversion reset {name} REF` moves it; `dataversion branch -d {name}` deletes it",
    )

def delete_branch(repo: Repo, name: str) -> str:
    """Delete branch `name`; NotFoundError "branch NAME not found" if there is none."""
    full = repo.branch_ref(name)
    try:
        return repo.refs.delete(full, reason="branch: deleted")
    except NotFoundError:
        raise branch_not_found(repo, name) from None

def branch_not_found(repo: Repo, name: str) -> NotFoundError:
    """The error for a branch that does not exist: says where it was if the reflog shows it
    deleted, and which refs exist."""
    gone = _deleted_at(repo, name)
    if gone:
        return NotFoundError(f"branch {name} not found: it was deleted, at {gone[:12]}",
                             hint=f"`dataversion branch {name} {gone[:12]}` restores it; {_refs_hint(repo)}")
    return NotFoundError(f"branch {name} not found", hint=_refs_hint(repo))

def _deleted_at(repo: Repo, name: str) -> str | None:
    """The commit branch `name` held when it was last deleted (None: no such reflog entry)."""
    try:
        entries = repo.refs.reflog(repo.branch_ref(name))
    except BadInputError:
        return None
    last = entries[-1] if entries else None
    return last.old if last is not None and last.new is None else None

def _refs_hint(repo: Repo, limit: int = 8) -> str:
    """Which branches and tags exist (at most `limit` of each), and how to list them."""
    def names(refs: dict[str, str]) -> str:
        shown = sorted(refs)[:limit]
        more = f" and {len(refs) - limit} more" if len(refs) > limit else ""
        return ", ".join(shown) + more

    try:
        heads, tag_refs = branches(repo), tags(repo)
    except DataversionError:  # a ref that cannot be read: the listing commands will say which
        return "list branches with `dataversion branch` and tags with `dataversion tag`"
    parts = [f"branches: {names(heads)}" if heads else "no branches",
             f"tags: {names(tag_refs)}" if tag_refs else "no tags"]
    return "; ".join(parts) + "; list them with `dataversion branch` and `dataversion tag`"

def resolve_ref(repo: Repo, ref: str) -> str:
    """`repo.resolve(ref)`, with a NotFoundError that tells the truth when REF's name is no
    branch or tag: a deleted branch says so (and where it was), and the refs that exist are
    named, instead of "the repository has no commits yet" while tags still hold commits."""
    try:
        return repo.resolve(ref)
    except NotFoundError as e:
        error = e
    base = ref.strip().split("~", 1)[0]
    if base != ref.strip() and _resolves(repo, base):
        raise error  # REF~N: the base exists, an ancestor does not
    if _deleted_at(repo, base):
        raise branch_not_found(repo, base) from None
    if not repo.refs.list():
        raise error  # an empty repository: "no commits yet" is the truth
    raise NotFoundError(f"unknown ref {base!r}: no branch, tag or commit by that name",
                        hint=_refs_hint(repo)) from error

def _resolves(repo: Repo, ref: str) -> bool:
    try:
        repo.resolve(ref)
    except NotFoundError:
        return False
    return True

def create_tag(repo: Repo, name: str, ref: str) -> str:
    commit_id = repo.resolve(ref)
    repo.refs.set_if_equals(TAGS + validate_ref_name(name), None, commit_id, reason=f"tag: {ref}")
    return commit_id

def reset(repo: Repo, branch: str, ref: str) -> tuple[str | None, str]:
    """Move `branch` to `ref` (rollback); recorded in the reflog. Returns (old, new)."""
    target = repo.resolve(ref)
    full = repo.branch_ref(branch)
    # as stored, checked or not: reset is how a corrupt branch ref is repaired
    current = repo.refs.read_unchecked(full)
    if current is None:
        raise NotFoundError(f"branch {branch} does not exist")
    repo.refs.set_if_equals(full, current, target, reason=f"reset: moving to {ref}")
    return current.commit_id, target

def reflog(repo: Repo, branch: str | None = None) -> list[dict[str, Any]]:
    """Reflog entries (of one branch, or all), oldest first. A branch with no entries that
    does not exist is NotFoundError; a deleted branch keeps its entries (its deletion last)."""
    if branch is None:
        return [e.to_dict() for e in repo.refs.reflog(None)]
    full = repo.branch_ref(branch)
    entries = [e.to_dict() for e in repo.refs.reflog(full)]
    if not entries and not repo.store.exists(full):
        raise branch_not_found(repo, branch)
    return entries

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
