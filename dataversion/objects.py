"""The object model: shard references, manifests and commits.

Each class serializes itself to canonical JSON and nothing else computes its id.

What a commit holds vs how it is packed: a commit's id covers a `RecordSummary` (count,
digest over record ids + metadata, counts by modality), never the shard list. The shard
list lives in a `Manifest`, which the stored commit points to next to (not inside) the
hashed part. Repacking shards or erasing a payload writes a new manifest with the same
record summary and re-points the commit: no commit id changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

from .errors import CorruptObjectError
from .hashing import canonical_json, object_id

FORMAT_VERSION = 1


def utc_now() -> str:
    """The current UTC time as stored in commits: ISO 8601 with microseconds and 'Z'."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class RecordSummary:
    """What a snapshot holds, independent of packing: count, set digest, counts by modality."""

    count: int
    digest: str
    by_modality: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "digest": self.digest, "by_modality": dict(self.by_modality)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecordSummary:
        return cls(int(d["count"]), str(d["digest"]), dict(d.get("by_modality", {})))


@dataclass(frozen=True)
class ShardRef:
    """One immutable Parquet shard as a manifest uses it.

    `deleted` lists row indices (sorted) that this snapshot does not hold: removing a record
    never rewrites a shard. `digest` and `by_modality` describe the live rows only.
    `erased` lists row indices (sorted) whose payload an erasure removed: the row (id and
    metadata) is still part of the snapshot and its order, but no reader serves it
    (`dataversion.porcelain.erase`; the erasure record in `erasures/` proves them).
    """

    id: str
    rows: int
    size: int
    min_id: str
    max_id: str
    digest: str
    by_modality: dict[str, int]
    deleted: tuple[int, ...] = ()
    erased: tuple[int, ...] = ()

    @property
    def live_rows(self) -> int:
        """Rows the snapshot holds (erased ones included: they keep their place)."""
        return self.rows - len(self.deleted)

    @property
    def served_rows(self) -> int:
        """Rows a reader serves: the live rows that are not erased."""
        return self.rows - len(set(self.deleted) | set(self.erased)) if self.erased else self.live_rows

    @cached_property
    def canonical(self) -> str:
        """This entry's canonical JSON text, computed once (manifests are joined from these)."""
        return canonical_json(self.to_dict()).decode("utf-8")

    @property
    def key(self) -> str:
        """Identity of the shard *as used*: same file and same deletions."""
        if not self.deleted and not self.erased:
            return self.id
        return f"{self.id}-{object_id(canonical_json([list(self.deleted), list(self.erased)]))}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "rows": self.rows,
            "size": self.size,
            "min_id": self.min_id,
            "max_id": self.max_id,
            "digest": self.digest,
            "by_modality": dict(self.by_modality),
        }
        if self.deleted:
            d["deleted"] = list(self.deleted)
        if self.erased:
            d["erased"] = list(self.erased)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardRef:
        return cls(
            id=d["id"],
            rows=int(d["rows"]),
            size=int(d["size"]),
            min_id=d["min_id"],
            max_id=d["max_id"],
            digest=d["digest"],
            by_modality=dict(d["by_modality"]),
            deleted=tuple(d.get("deleted", ())),
            erased=tuple(d.get("erased", ())),
        )


@dataclass(frozen=True)
class Manifest:
    """What one snapshot holds (its record summary) and where the payloads lie (shards)."""

    records: RecordSummary
    shards: tuple[ShardRef, ...]

    def to_bytes(self) -> bytes:
        # Equal to canonical_json({"format", "records", "shards"}) (keys in sorted order),
        # but joined from each ShardRef's cached text: a commit that adds one shard to a
        # manifest of thousands does not re-serialize the others.
        head = canonical_json({"format": FORMAT_VERSION, "records": self.records.to_dict()}).decode("utf-8")
        return (head[:-1] + ',"shards":[' + ",".join(s.canonical for s in self.shards) + "]}").encode("utf-8")

    @property
    def id(self) -> str:
        return object_id(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes, expected_id: str | None = None) -> Manifest:
        if expected_id is not None and object_id(data) != expected_id:
            raise CorruptObjectError(f"manifest {expected_id} is corrupt: its bytes hash to {object_id(data)}")
        try:
            d = json.loads(data)
            return cls(
                RecordSummary.from_dict(d["records"]),
                tuple(ShardRef.from_dict(s) for s in d["shards"]),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptObjectError(f"manifest {expected_id or '?'} cannot be parsed: {e}") from e


@dataclass(frozen=True)
class Commit:
    """A snapshot in history. Its id is the hash of the canonical bytes of these fields."""

    parents: tuple[str, ...]
    author: str
    time: str
    message: str
    records: RecordSummary
    counts: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    attachments: dict[str, str] = field(default_factory=dict)

    def hashed_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "parents": list(self.parents),
            "author": self.author,
            "time": self.time,
            "message": self.message,
            "records": self.records.to_dict(),
            "counts": self.counts,
            "provenance": self.provenance,
            "attachments": self.attachments,
        }

    @property
    def id(self) -> str:
        return object_id(canonical_json(self.hashed_dict()))

    def to_stored_bytes(self, manifest_id: str, attachment_overrides: dict[str, str] | None = None) -> bytes:
        """The stored form: the hashed fields plus the (packing) pointer to a manifest.

        `attachment_overrides` (name -> blob id), beside the hashed fields like the manifest
        pointer, replace attachments an erasure rewrote (their excerpts or index entries of
        an erased record removed): the commit id still names the original blob ids."""
        d: dict[str, Any] = {"commit": self.hashed_dict(), "manifest": manifest_id}
        if attachment_overrides:
            d["attachment_overrides"] = dict(attachment_overrides)
        return canonical_json(d)

    @classmethod
    def read_stored(cls, data: bytes, expected_id: str) -> tuple[Commit, str, dict[str, str]]:
        """Parse a stored commit: (commit, manifest id, attachment overrides). Verifies the id."""
        commit, manifest_id = cls.from_stored_bytes(data, expected_id)
        try:
            overrides = dict(json.loads(data).get("attachment_overrides", {}))
        except (ValueError, TypeError, AttributeError) as e:
            raise CorruptObjectError(f"commit {expected_id} cannot be parsed: {e}") from e
        return commit, manifest_id, overrides

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Commit:
        return cls(
            parents=tuple(d["parents"]),
            author=d["author"],
            time=d["time"],
            message=d["message"],
            records=RecordSummary.from_dict(d["records"]),
            counts=d.get("counts", {}),
            provenance=d.get("provenance", {}),
            attachments=d.get("attachments", {}),
        )

    @classmethod
    def from_stored_bytes(cls, data: bytes, expected_id: str) -> tuple[Commit, str]:
        """Parse a stored commit; returns (commit, manifest_id). Verifies the id."""
        try:
            d = json.loads(data)
            commit = cls.from_dict(d["commit"])
            manifest_id = d["manifest"]
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptObjectError(f"commit {expected_id} cannot be parsed: {e}") from e
        if commit.id != expected_id:
            raise CorruptObjectError(f"commit {expected_id} is corrupt: its fields hash to {commit.id}")
        return commit, manifest_id

    def summary(self, commit_id: str) -> dict[str, Any]:
        """The JSON shape `log --json` and `show --json` print."""
        d = self.hashed_dict()
        d.pop("format")
        return {"id": commit_id, **d}
