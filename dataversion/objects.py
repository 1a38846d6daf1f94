"""The object model: commits, their record summaries, and shard descriptions.

Each class serializes itself to canonical JSON and nothing else computes its id.

What a commit holds vs how it is packed (format 2): a commit's id is the SHA-256 of its
stored bytes, which include a `RecordSummary` whose `digest` is the root of the content
tree (`dataversion.tree`), a Merkle root over every record's id and BLAKE2b digest. Where
the payloads lie is a separate, re-pointable packing object (`dataversion.packing`) found
by the content root; every reader checks the packing against the root before serving.
Repacking or erasing a payload re-points the packing: no commit id changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

from .errors import CorruptObjectError
from .hashing import canonical_json, object_id, sha256_hex

FORMAT_VERSION = 2


def utc_now() -> str:
    """The current UTC time as stored in commits: ISO 8601 with microseconds and 'Z'."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class RecordSummary:
    """What a snapshot holds, independent of packing: count, content-tree root (`digest`),
    counts by modality."""

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
    """One immutable Parquet shard as a writer describes it (what distributed workers hand
    to `commit(prewritten_shards=...)`). Packings keep only id, rows and size per shard;
    `digest` is format 1's and empty on new shards."""

    id: str
    rows: int
    size: int
    min_id: str
    max_id: str
    digest: str
    by_modality: dict[str, int]
    deleted: tuple[int, ...] = ()

    @property
    def live_rows(self) -> int:
        return self.rows - len(self.deleted)

    @cached_property
    def canonical(self) -> str:
        """This entry's canonical JSON text, computed once (manifests are joined from these)."""
        return canonical_json(self.to_dict()).decode("utf-8")

    @property
    def key(self) -> str:
        """Identity of the shard *as used*: same file and same deletions."""
        return self.id if not self.deleted else f"{self.id}-{object_id(canonical_json(list(self.deleted)))}"

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
        )


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
    def root(self) -> str:
        """The root of the content tree: what the commit holds."""
        return self.records.digest

    @property
    def id(self) -> str:
        return sha256_hex(self.to_stored_bytes())

    def to_stored_bytes(self) -> bytes:
        """The stored form: canonical JSON of the hashed fields (its SHA-256 is the id)."""
        return canonical_json(self.hashed_dict())

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
    def from_stored_bytes(cls, data: bytes, expected_id: str) -> Commit:
        """Parse a stored commit, checking that its bytes hash to `expected_id`.

        A format-1 commit (from dataversion 0.1) is refused: FormatError naming `upgrade`."""
        actual = sha256_hex(data)
        try:
            d = json.loads(data)
            if isinstance(d, dict) and "commit" in d and "manifest" in d:
                from .errors import FormatError

                raise FormatError(
                    f"commit {expected_id} is in repository format 1 (dataversion 0.1)",
                    hint="run `dataversion upgrade --repo URL` to convert the repository to format 2",
                )
            commit = cls.from_dict(d)
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptObjectError(f"commit {expected_id} cannot be parsed: {e}") from e
        if actual != expected_id:
            raise CorruptObjectError(f"commit {expected_id} is corrupt: its bytes hash to {actual}", hint="run `dataversion verify`")
        return commit

    def summary(self, commit_id: str) -> dict[str, Any]:
        """The JSON shape `log --json` and `show --json` print."""
        d = self.hashed_dict()
        d.pop("format")
        return {"id": commit_id, **d}
