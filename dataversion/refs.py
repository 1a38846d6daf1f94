"""Branches, tags and the reflog, on top of a store's compare-and-swap.

Every ref update goes through `set_if_equals`: one place where concurrency is right or wrong.
Branches move (CAS from the value the writer read); tags are created once and never move.
Each update appends one reflog object (one object per entry, so concurrent writers never
lose an entry), which `gc` treats as a root.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import dataclass

from .errors import BadInputError, ConflictError, CorruptObjectError, NotFoundError, StoreError
from .hashing import canonical_json
from .stores.base import Store

HEADS = "refs/heads/"
TAGS = "refs/tags/"
# git check-ref-format: no ASCII control character, space, ~ ^ : ? * [ or backslash anywhere.
_FORBIDDEN_RE = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
_REF_NAME_HINT = "use letters, digits and . _ - /, as git allows (see `git check-ref-format`)"


def _ref_name_problem(name: str) -> str | None:
    """Why `name` is not a valid ref name by git's `check-ref-format` rules (None: it is)."""
    if not name:
        return "it is empty"
    if name in ("@", "HEAD"):
        return f"{name!r} is reserved"
    if name.startswith("-"):
        return "it starts with '-'"  # git refuses such branch names: they read as options
    bad = _FORBIDDEN_RE.search(name)
    if bad:
        return f"it contains {bad.group()!r}"
    for needle in ("..", "@{", "//"):
        if needle in name:
            return f"it contains {needle!r}"
    if name.startswith("/") or name.endswith("/"):
        return "it starts or ends with '/'"
    if name.endswith("."):
        return "it ends with '.'"
    for part in name.split("/"):
        if part.startswith("."):
            return f"its component {part!r} starts with '.'"
        if part.endswith(".lock"):
            return f"its component {part!r} ends with '.lock'"
    return None


def validate_ref_name(name: str) -> str:
    """`name` if it is a valid branch or tag name (git's rules, and not commit-id-like);
    else BadInputError saying which rule it breaks."""
    problem = _ref_name_problem(name)
    if problem:
        raise BadInputError(f"invalid ref name {name!r}: {problem}", hint=_REF_NAME_HINT)
    if re.fullmatch(r"[0-9a-f]{8,64}", name):
        raise BadInputError(f"ref name {name!r} looks like a commit id")
    return name


@dataclass(frozen=True)
class RefValue:
    commit_id: str
    token: str


@dataclass(frozen=True)
class ReflogEntry:
    ref: str
    old: str | None
    new: str | None
    time: float
    reason: str
    author: str

    def to_dict(self) -> dict:
        return {"ref": self.ref, "old": self.old, "new": self.new, "time": self.time, "reason": self.reason, "author": self.author}


def default_author() -> str:
    return os.environ.get("DATAVERSION_AUTHOR") or os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"


_COMMIT_ID_RE = re.compile(r"[0-9a-f]{64}|[0-9a-f]{32}")  # what a ref file holds (format 1 names commits by 32 hex digits)


class Refs:
    def __init__(self, store: Store):
        self.store = store

    def read(self, full_name: str) -> RefValue | None:
        """The commit a ref names, or None where there is no such ref. A ref file that does
        not hold a commit id (emptied, truncated, overwritten) is CorruptObjectError naming
        it: never an empty commit id passed on as "not found"."""
        value = self.read_unchecked(full_name)
        if value is not None and not _COMMIT_ID_RE.fullmatch(value.commit_id):
            name = short_ref(full_name)
            shown = value.commit_id[:40] + ("..." if len(value.commit_id) > 40 else "")
            hint = ("point it at a commit again: `dataversion reset {0} COMMIT` (`dataversion reflog {0}` lists "
                    "where it pointed)".format(full_name[len(HEADS):]) if full_name.startswith(HEADS)
                    else "`dataversion reflog` lists where it pointed; `dataversion verify` what else is damaged")
            raise CorruptObjectError(f"{name} is corrupt: {full_name} holds {shown!r}, not a commit id", hint=hint)
        return value

    def read_unchecked(self, full_name: str) -> RefValue | None:
        """The ref's content as stored, checked or not: what moving or deleting a corrupt ref
        compares against (`reset`, `branch -d`)."""
        try:
            data, token = self.store.get_versioned(full_name)
        except NotFoundError:
            return None
        return RefValue(data.decode("utf-8", "replace").strip(), token)

    def set_if_equals(self, full_name: str, old: RefValue | None, new_commit: str, *, reason: str) -> None:
        """Point `full_name` at `new_commit` only if it still holds `old` (None: must not exist).

        Raises ConflictError if another writer got there first; nothing is changed then. A
        creation (old None) also raises BadInputError for an invalid name or for a name that
        is a directory of another ref or has one as its directory (`main` beside `main/x`),
        as git forbids, on every store.
        """
        payload = (new_commit + "\n").encode()
        if full_name.startswith(TAGS) and old is not None:
            raise ConflictError(f"tag {full_name[len(TAGS):]} already exists; tags never move")
        if old is None:
            self._create(full_name, payload)
        else:
            try:
                self.store.put_if_match(full_name, payload, old.token)
            except ConflictError:
                raise ConflictError(
                    f"{short_ref(full_name)} moved while this commit was being written (another writer won the race)",
                    hint="re-run the command to build on the new tip; nothing was lost",
                ) from None
        self.append_reflog(full_name, old.commit_id if old else None, new_commit, reason)

    def _create(self, full_name: str, payload: bytes) -> None:
        validate_ref_name(_name_in_namespace(full_name))
        clash = self._name_clash(full_name)
        if clash:
            raise BadInputError(
                f"cannot create {short_ref(full_name)}: {short_ref(clash)} exists",
                hint="a ref name cannot also be the directory of other refs (as in git): delete it or pick another name",
            )
        try:
            created = self.store.put_if_absent(full_name, payload)
        except StoreError:
            # file:// cannot make `a/b` under a file `a`, nor `a` over a directory `a/`:
            # a clashing ref created since the check above.
            if self._name_clash(full_name):
                raise ConflictError(f"{short_ref(full_name)} was not created: a ref of a clashing name was created at the same time",
                                    hint="list refs with `dataversion branch` / `dataversion tag`") from None
            raise
        if not created:
            if full_name.startswith(TAGS):
                raise ConflictError(f"tag {full_name[len(TAGS):]} already exists; tags never move")
            raise ConflictError(
                f"{short_ref(full_name)} was created by another writer at the same time",
                hint="re-run the command to build on the new tip",
            )
        # Two writers creating `a` and `a/b` at once both pass the check above; each looks
        # again and backs out on a clash, so the two never stay side by side (both may lose).
        clash = self._name_clash(full_name)
        if clash:
            ours = self.read(full_name)
            if ours is not None and ours.commit_id.encode() == payload.strip():
                try:
                    self.store.delete_if_match(full_name, ours.token)
                except ConflictError:
                    pass
            raise ConflictError(f"{short_ref(full_name)} was not created: {short_ref(clash)} was created at the same time",
                                hint="a ref name cannot also be the directory of other refs: pick another name")

    def _name_clash(self, full_name: str) -> str | None:
        """An existing ref that `full_name` cannot live beside: one of its directories
        (`refs/heads/a` for `refs/heads/a/b`), or one below it (`refs/heads/a/b` for `refs/heads/a`)."""
        parts = full_name.split("/")
        namespace = 2 if full_name.startswith((HEADS, TAGS)) else 1  # "refs/heads" is no ref
        for i in range(namespace + 1, len(parts)):
            parent = "/".join(parts[:i])
            if self.store.exists(parent):
                return parent
        for info in self.store.list(full_name + "/"):
            return info.key
        return None

    def delete(self, full_name: str, *, reason: str) -> str:
        """Delete a ref by compare-and-swap from the value read: NotFoundError if it does not
        exist, ConflictError (nothing deleted) if another writer moved it meanwhile."""
        current = self.read_unchecked(full_name)  # a corrupt ref can be deleted
        if current is None:
            raise NotFoundError(f"no ref {short_ref(full_name)}")
        try:
            self.store.delete_if_match(full_name, current.token)
        except ConflictError:
            raise ConflictError(
                f"{short_ref(full_name)} was not deleted: another writer moved or deleted it meanwhile",
                hint="look at its new tip and delete again if you still mean it",
            ) from None
        self.append_reflog(full_name, current.commit_id, None, reason)
        return current.commit_id

    def append_reflog(self, full_name: str, old: str | None, new: str | None, reason: str) -> None:
        now = time.time()
        entry = ReflogEntry(full_name, old, new, now, reason, default_author())
        key = f"reflog/{full_name}/{int(now * 1e6):020d}-{secrets.token_hex(4)}.json"
        self.store.put(key, canonical_json(entry.to_dict()))

    def reflog(self, full_name: str | None = None, skip: set[str] = frozenset(), *, strict: bool = False) -> list[ReflogEntry]:
        """Reflog entries (of one ref, or all), oldest first. `strict`: an unreadable entry
        raises CorruptObjectError instead of being skipped (gc must not guess)."""
        prefix = f"reflog/{full_name}/" if full_name else "reflog/"
        entries = []
        for info in self.store.list(prefix):
            if info.key in skip:
                continue
            try:
                d = json.loads(self.store.get(info.key))
                entry = ReflogEntry(d["ref"], d["old"], d["new"], d["time"], d["reason"], d["author"])
            except NotFoundError:
                continue
            except (ValueError, KeyError, TypeError) as e:
                if strict:
                    raise CorruptObjectError(f"gc stopped, nothing deleted: reflog entry {info.key} cannot be read ({e})",
                                             hint="run `dataversion verify --all`") from e
                continue
            if full_name is not None and entry.ref != full_name:
                continue  # reflog/refs/heads/main/ also lists refs/heads/main/x's entries
            entries.append(entry)
        entries.sort(key=lambda e: e.time)
        return entries

    def list(self, prefix: str = "refs/") -> dict[str, str]:
        out = {}
        for info in self.store.list(prefix):
            value = self.read(info.key)
            if value is not None:
                out[info.key] = value.commit_id
        return out


def _name_in_namespace(full_name: str) -> str:
    for p in (HEADS, TAGS):
        if full_name.startswith(p):
            return full_name[len(p):]
    return full_name[len("refs/"):] if full_name.startswith("refs/") else full_name


def short_ref(full_name: str) -> str:
    for p, label in ((HEADS, "branch "), (TAGS, "tag ")):
        if full_name.startswith(p):
            return label + full_name[len(p):]
    return full_name
