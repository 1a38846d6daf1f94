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

from .errors import BadInputError, ConflictError, CorruptObjectError, NotFoundError
from .hashing import canonical_json
from .stores.base import Store

HEADS = "refs/heads/"
TAGS = "refs/tags/"
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]*$")


def validate_ref_name(name: str) -> str:
    if not _NAME_RE.match(name) or ".." in name or name.endswith("/") or name.endswith(".lock") or "//" in name:
        raise BadInputError(f"invalid ref name {name!r}", hint="use letters, digits, '.', '_', '-', '/'")
    if re.fullmatch(r"[0-9a-f]{8,32}", name):
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


class Refs:
    def __init__(self, store: Store):
        self.store = store

    def read(self, full_name: str) -> RefValue | None:
        try:
            data, token = self.store.get_versioned(full_name)
        except NotFoundError:
            return None
        return RefValue(data.decode().strip(), token)

    def set_if_equals(self, full_name: str, old: RefValue | None, new_commit: str, *, reason: str) -> None:
        """Point `full_name` at `new_commit` only if it still holds `old` (None: must not exist).

        Raises ConflictError if another writer got there first; nothing is changed then.
        """
        payload = (new_commit + "\n").encode()
        if full_name.startswith(TAGS):
            if old is not None:
                raise ConflictError(f"tag {full_name[len(TAGS):]} already exists; tags never move")
            if not self.store.put_if_absent(full_name, payload):
                raise ConflictError(f"tag {full_name[len(TAGS):]} already exists; tags never move")
        elif old is None:
            if not self.store.put_if_absent(full_name, payload):
                raise ConflictError(
                    f"{short_ref(full_name)} was created by another writer at the same time",
                    hint="re-run the command to build on the new tip",
                )
        else:
            try:
                self.store.put_if_match(full_name, payload, old.token)
            except ConflictError:
                raise ConflictError(
                    f"{short_ref(full_name)} moved while this commit was being written (another writer won the race)",
                    hint="re-run the command to build on the new tip; nothing was lost",
                ) from None
        self.append_reflog(full_name, old.commit_id if old else None, new_commit, reason)

    def delete(self, full_name: str, *, reason: str) -> str:
        current = self.read(full_name)
        if current is None:
            raise NotFoundError(f"no ref {short_ref(full_name)}")
        self.store.delete(full_name)
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


def short_ref(full_name: str) -> str:
    for p, label in ((HEADS, "branch "), (TAGS, "tag ")):
        if full_name.startswith(p):
            return label + full_name[len(p):]
    return full_name
