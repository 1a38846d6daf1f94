"""What an ingest run leaves: its report, and the attachments of its commit
(`consumed`: the objects it read, `rejects`, `duplicates`), with their readers."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import dataversion
from dataversion import Repo

from .config import PIPELINE_VERSION

CONSUMED = "consumed"  # {source url: {object key: change token}}, cumulative along the branch
REJECTS = "rejects"
DUPLICATES = "duplicates"
DEDUP_INDEX = "dedup_index"  # the cumulative .npz of earlier versions (read when rebuilding)
DEDUP_STATE = "dedup_state"  # the branch's dedup state (pipelines.dedup.state)
RETRIED = "retried"  # keys of objects rejected before and read again by this run (sorted)
CODE_VERSION = f"dataversion {dataversion.__version__} / ingest pipeline {PIPELINE_VERSION}"


@dataclass
class IngestReport:
    """What a run did. `commit` is None when nothing was new."""

    commit: str | None
    parent: str | None
    branch: str
    source: str
    objects: int = 0  # new objects consumed by this run
    objects_skipped: int = 0  # objects the branch had already consumed
    objects_retried: int = 0  # of `objects`: rejected before, read again (retry_rejected)
    inputs: int = 0  # units: objects, or JSONL lines of JSONL objects
    kept: int = 0
    duplicates: int = 0
    rejected: int = 0
    by_modality: dict[str, int] = field(default_factory=dict)  # kept records by modality
    reasons: dict[str, int] = field(default_factory=dict)  # rejects by reason
    duplicate_kinds: dict[str, int] = field(default_factory=dict)  # exact / near
    shards_written: int = 0
    features: str | None = None  # store key of the commit's features table
    config_hash: str = ""
    code_version: str = CODE_VERSION
    sidecar_errors: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_consumed(repo: Repo, commit_id: str | None) -> dict[str, dict[str, str]]:
    """The objects the branch had consumed at `commit_id`: {source url: {key: token}}.

    Ingest commits carry the record; a commit of another kind (`add`, `rm`, `revert`,
    `reset` targets) consumes nothing and carries none, so the first-parent history is
    walked back to the newest commit that does (an incremental ingest after an `rm` read
    every object again and brought the removed records back)."""
    while commit_id is not None:
        data = repo.read_attachment(commit_id, CONSUMED)
        if data:
            return json.loads(data)
        parents = repo.read_commit(commit_id).parents
        commit_id = parents[0] if parents else None
    return {}


def read_rejects(repo: Repo, ref: str) -> list[dict]:
    """The rejects stored with the commit REF names, or past commits that read no inputs
    (`rm`, `revert`) with the newest one that did: [{source, reason, message}], sorted by
    source."""
    from dataversion.porcelain.history import inputs_commit

    data = repo.read_attachment(inputs_commit(repo, repo.resolve(ref)), REJECTS)
    return json.loads(data) if data else []


def read_duplicates(repo: Repo, ref: str) -> list[dict]:
    """The duplicates an ingest commit recorded: [{source, record_id, duplicate_of, kind}]."""
    data = repo.read_attachment(repo.resolve(ref), DUPLICATES)
    return json.loads(data) if data else []
