"""The loader state's schema and checksum: what a checkpoint may claim, checked before use.

A loader state (`SnapshotDataset.state_dict()`) is a flat dict of JSON scalars. Every reader
of one (`load_state_dict`, `load_checkpoint`, `dataversion inspect`, lineage) goes through
`validate_loader_state`, so a malformed or tampered state is refused with one line
(`BadInputError` naming the field), never a raw KeyError/IndexError/TypeError deep inside the
order. `state_checksum` is the sha256 of the state's canonical JSON: a checkpoint stores it
beside the state and `checkpoint.parse_checkpoint` compares it. Torch-free.

Keys the schema does not know are kept (a newer writer may add some) but must be JSON
scalars; the checksum covers them too.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from ..errors import BadInputError

STATE_FORMAT = 1
REMAINDER_POLICIES = ("pad", "drop")
MAX_WINDOW = 1 << 24  # order._MAX_PERMUTATION
_HEX = re.compile(r"[0-9a-f]+\Z")
_MAX_INT = 1 << 63


def _int(state: dict, name: str, lo: int, hi: int = _MAX_INT, *, optional: bool = False) -> int | None:
    v = state.get(name)
    if v is None and optional:
        return None
    # bool is an int in Python: True as a position is a malformed state, not 1
    if type(v) is not int:
        raise BadInputError(f"loader state: {name} must be an integer, not {type(v).__name__} {v!r:.40}")
    if not lo <= v < hi:
        raise BadInputError(f"loader state: {name} {v} is outside [{lo}, {hi})")
    return v


def validate_loader_state(state: Any) -> dict[str, Any]:
    """Check a loader state's types and ranges; return it (a plain dict) or raise BadInputError.

    Required: format (== STATE_FORMAT), commit (hex id), seed (int, 64-bit), epoch >= 0,
    position in [0, num_records], num_records >= 0, shuffle (bool), window in [1, 2**24],
    world_size >= 1, batch_size >= 1, remainder ("pad" or "drop"). Optional: repo (str or
    None). Whether the commit is the loader's own is the loader's check, not this one.
    """
    if not isinstance(state, dict):
        raise BadInputError(f"not a dataversion loader state (a {type(state).__name__}, not a dict)")
    if "commit" not in state or "position" not in state:
        raise BadInputError("not a dataversion loader state (no commit/position)")
    bad = [k for k in state if not isinstance(k, str)]
    if bad:
        raise BadInputError(f"loader state: non-string key {bad[0]!r:.40}")
    fmt = state.get("format")
    if type(fmt) is not int or fmt != STATE_FORMAT:
        raise BadInputError(f"loader state: format {fmt!r:.40} is not {STATE_FORMAT} (written by another version?)")
    commit = state["commit"]
    if not isinstance(commit, str) or not 16 <= len(commit) <= 128 or not _HEX.match(commit):
        raise BadInputError(f"loader state: commit {commit!r:.80} is not a commit id")
    repo = state.get("repo")
    if repo is not None and not isinstance(repo, str):
        raise BadInputError(f"loader state: repo must be a string, not {type(repo).__name__}")
    _int(state, "seed", -_MAX_INT, _MAX_INT * 2)
    _int(state, "epoch", 0)
    num_records = _int(state, "num_records", 0)
    _int(state, "position", 0, num_records + 1)
    _int(state, "window", 1, MAX_WINDOW + 1)
    _int(state, "world_size", 1, 1 << 20)
    _int(state, "batch_size", 1, 1 << 31)
    if type(state.get("shuffle")) is not bool:
        raise BadInputError(f"loader state: shuffle must be true or false, not {state.get('shuffle')!r:.40}")
    if state.get("remainder") not in REMAINDER_POLICIES:
        raise BadInputError(f"loader state: remainder {state.get('remainder')!r:.40} is not one of {REMAINDER_POLICIES}")
    for k, v in state.items():
        if not (v is None or isinstance(v, (str, int, float, bool))):
            raise BadInputError(f"loader state: {k} must be a JSON scalar, not {type(v).__name__}")
    return dict(state)


def state_checksum(state: dict[str, Any]) -> str:
    """sha256 (hex) of the state's canonical JSON (sorted keys, no spaces)."""
    try:
        canon = json.dumps(state, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise BadInputError(f"loader state is not canonical JSON: {e}") from None
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()
