"""Training lineage: which checkpoint trained on which commit, and which records it had seen.

Objects (one per entry, written once, never read-modify-written, so any number of ranks and
jobs record at the same time without losing an entry):

    lineage/<run>/<id>.json   the entry: run, step, commit, seed, epoch, position, world size,
                              batch size, remainder, shuffle, window, checkpoint, sha256, saved_at
    pins/<run>/<id>.json      {"commits": [commit], "run", "checkpoint", "entry"}: a gc root
                              (`Repo.root_commits` reads every object under pins/)
    unpinned/<run>/<id>.json  {"entry", "pin", "run", "commits", "checkpoint", "unpinned_at",
                              "had_pin"}: `unpin` released that entry's pin on purpose

`<run>` is the run name percent-encoded; `<id>` is "<microseconds since the epoch>-<random>",
so listing order is save order; an entry, its pin and its release share `<run>/<id>`. The
pin is written before the entry: an entry never names a commit that gc may take, and a
checkpoint whose entry was not written (a save whose repository stalled or failed after
the pin) still has its commit protected. The pin names its run and checkpoint itself, so
`unpin` finds pins from the pins, not through entries: every pin can be removed, also one
whose entry was never written. Unpinning writes the release first, then deletes the pin,
and keeps the entry (history stays queryable; `pinned` says whether the commit is still
protected); gc may then collect the commit, and `verify` reports an entry whose commit is
gone as released (a note), not as missing, when its release is recorded. An entry whose
commit is missing while its pin exists, or whose pin went without a release, is a loss.

"Which records had this checkpoint seen" is recomputed from the loader's pure order
(`dataversion.training.order`), never by replaying or rereading payloads. For an entry X of run R,
with H the entries of R saved up to X:
- on each commit c that H trained on, with Y the last entry of H on c: every record placed
  before Y.position in the order of epoch Y.epoch, plus the records consumed in the earlier
  epochs on c (epochs from 0 for the run's first commit, from the first epoch recorded on c
  for a commit switched to later);
- remainder "pad" (the default): every epoch consumes every record, so that is exact;
- remainder "drop": the epoch's dropped tail depends on where the epoch was last resumed
  and at which world size. It is taken from the last entry of H in that epoch (resume
  position p, world size W, batch size B: the epoch ends at p + floor((n-p)/(B*W))*B*W), or,
  with no entry in that epoch, from X's world size. Exact unless the world size changed
  after the last checkpoint recorded in an epoch: use "pad" for elastic jobs.
Finding a record's place needs its rank in the commit's id order: one content-tree lookup
(O(log N) node reads), whatever the packing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote, unquote

import numpy as np

from ..errors import BadInputError, CorruptObjectError, NotFoundError
from ..repo import Repo, commit_key
from .blocks import block_sizes
from .order import EpochOrder

__all__ = [
    "LineageEntry",
    "record_checkpoint",
    "new_entry_id",
    "recorded_sha256",
    "entries",
    "runs",
    "checkpoints_on_commit",
    "checkpoints_that_saw",
    "records_seen",
    "unpin",
    "Release",
    "Pin",
    "pins",
    "pin_key",
    "pinned_entry_ids",
    "checkpoint_location",
]

LINEAGE_PREFIX = "lineage/"
PINS_PREFIX = "pins/"
UNPINNED_PREFIX = "unpinned/"
ENTRY_FORMAT = 1
DEFAULT_RUN = "default"


# --------------------------------------------------------------------------- entries
@dataclass(frozen=True)
class LineageEntry:
    """One recorded checkpoint. `id` orders entries by save time."""

    id: str
    run: str
    step: int | None
    commit: str
    seed: int
    epoch: int
    position: int
    world_size: int
    batch_size: int | None
    remainder: str
    shuffle: bool
    window: int
    num_records: int | None
    checkpoint: str
    sha256: str | None
    saved_at: str
    repo: str | None = None

    @property
    def key(self) -> str:
        return f"{LINEAGE_PREFIX}{_run_key(self.run)}/{self.id}.json"

    @property
    def pin_key(self) -> str:
        return f"{PINS_PREFIX}{_run_key(self.run)}/{self.id}.json"

    @property
    def unpinned_key(self) -> str:
        return f"{UNPINNED_PREFIX}{_run_key(self.run)}/{self.id}.json"

    def to_dict(self) -> dict[str, Any]:
        return {"format": ENTRY_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LineageEntry:
        try:
            return cls(
                id=str(d["id"]), run=str(d["run"]), step=None if d.get("step") is None else int(d["step"]),
                commit=str(d["commit"]), seed=int(d["seed"]), epoch=int(d["epoch"]), position=int(d["position"]),
                world_size=int(d.get("world_size") or 1),
                batch_size=None if d.get("batch_size") is None else int(d["batch_size"]),
                remainder=str(d.get("remainder") or "pad"), shuffle=bool(d.get("shuffle", True)),
                window=int(d["window"]), num_records=None if d.get("num_records") is None else int(d["num_records"]),
                checkpoint=str(d["checkpoint"]), sha256=d.get("sha256"), saved_at=str(d["saved_at"]),
                repo=d.get("repo"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptObjectError(f"lineage entry cannot be parsed: {e}") from e


def _run_key(run: str) -> str:
    if not isinstance(run, str) or not run or run in (".", ".."):
        raise BadInputError(f"invalid run name {run!r}")
    return quote(run, safe="-_.+=@")


def checkpoint_location(path: str) -> str:
    """How entries name a checkpoint: s3:// URLs as given, local paths absolute."""
    if "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


def _new_id() -> str:
    return f"{time.time_ns() // 1000:017d}-{secrets.token_hex(4)}"


def pin_key(run: str, entry_id: str) -> str:
    """The key of the pin of entry `entry_id` of `run` (whether or not the entry was written)."""
    return f"{PINS_PREFIX}{_run_key(run)}/{entry_id}.json"


def new_entry_id() -> str:
    """A fresh entry id (time-ordered), chosen before the checkpoint is written."""
    return _new_id()


def recorded_sha256(repo: Repo, run: str, entry_id: str) -> str | None:
    """The sha256 the lineage entry `entry_id` of `run` recorded, or None if there is no such
    entry (never recorded, unpinned, another repository) or it recorded none. One read."""
    if not isinstance(entry_id, str) or not re.fullmatch(r"[0-9]{17}-[0-9a-f]{8}", entry_id):
        raise BadInputError(f"checkpoint names a malformed lineage entry id {entry_id!r:.40}")
    try:
        data = repo.store.get(f"{LINEAGE_PREFIX}{_run_key(run)}/{entry_id}.json")
    except NotFoundError:
        return None
    try:
        entry = LineageEntry.from_dict(json.loads(data))
    except ValueError as e:
        raise CorruptObjectError(f"lineage entry {entry_id} of run {run} cannot be parsed: {e}") from e
    return entry.sha256


def record_checkpoint(
    repo: Repo,
    loader_state: dict[str, Any],
    *,
    checkpoint: str,
    run: str | None = None,
    step: int | None = None,
    sha256: str | None = None,
    saved_at: str | None = None,
    entry_id: str | None = None,
) -> LineageEntry:
    """Append a lineage entry for a checkpoint and pin its commit (pin first, then entry).

    The pin names the run, the checkpoint and the entry, so a pin whose entry write never
    happened (stalled or failed) is still found by `unpin --run` and `unpin --checkpoint`.

    `loader_state` is a loader's `state_dict()`. `entry_id` (from `new_entry_id`, written
    into the checkpoint before it is saved) lets a load find this entry and compare sha256. Two new objects, never an update: safe with
    any number of concurrent writers. Store errors propagate (the caller decides whether a
    failed record is fatal; `save_checkpoint` warns).
    """
    s = loader_state
    if not isinstance(s, dict) or "commit" not in s or "position" not in s:
        raise BadInputError("not a dataversion loader state (no commit/position)")
    entry = LineageEntry(
        id=entry_id or _new_id(), run=run or DEFAULT_RUN, step=None if step is None else int(step), commit=str(s["commit"]),
        seed=int(s["seed"]), epoch=int(s["epoch"]), position=int(s["position"]), world_size=int(s.get("world_size") or 1),
        batch_size=None if s.get("batch_size") is None else int(s["batch_size"]), remainder=str(s.get("remainder") or "pad"),
        shuffle=bool(s.get("shuffle", True)), window=int(s["window"]),
        num_records=None if s.get("num_records") is None else int(s["num_records"]),
        checkpoint=checkpoint_location(checkpoint), sha256=sha256,
        saved_at=saved_at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), repo=s.get("repo"),
    )
    _run_key(entry.run)  # validate before writing anything
    pin = {"commits": [entry.commit], "run": entry.run, "checkpoint": entry.checkpoint, "entry": entry.key}
    repo.store.put_if_absent(entry.pin_key, _json(pin))
    repo.store.put_if_absent(entry.key, _json(entry.to_dict()))
    return entry


def _json(d: dict[str, Any]) -> bytes:
    return json.dumps(d, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _read_many(repo: Repo, keys: list[str]) -> list[bytes | None]:
    def get(key: str) -> bytes | None:
        try:
            return repo.store.get(key)
        except NotFoundError:  # unpinned/removed between list and get
            return None

    if len(keys) < 16 or repo.store.local_path("x") is not None:
        return [get(k) for k in keys]
    with ThreadPoolExecutor(8) as pool:  # S3: latency-bound
        return list(pool.map(get, keys))


def entries(repo: Repo, *, run: str | None = None, commit: str | None = None) -> list[LineageEntry]:
    """Recorded checkpoints, oldest first; optionally of one run and/or on one commit."""
    prefix = LINEAGE_PREFIX + (_run_key(run) + "/" if run is not None else "")
    keys = [i.key for i in repo.store.list(prefix) if i.key.endswith(".json")]
    out = []
    for key, data in zip(keys, _read_many(repo, keys)):
        if data is None:
            continue
        try:
            e = LineageEntry.from_dict(json.loads(data))
        except (ValueError, CorruptObjectError) as err:
            raise CorruptObjectError(f"lineage entry {key} cannot be parsed: {err}") from err
        if commit is None or e.commit == commit:
            out.append(e)
    out.sort(key=lambda e: (e.id, e.run))
    return out


def runs(repo: Repo) -> list[str]:
    """Run names that have recorded entries."""
    names = {unquote(i.key[len(LINEAGE_PREFIX):].split("/", 1)[0]) for i in repo.store.list(LINEAGE_PREFIX)}
    return sorted(names)


def _require_run(repo: Repo, run: str, found: list) -> None:
    if not found:
        known = runs(repo)
        hint = f"recorded runs: {', '.join(known[:10])}{' ...' if len(known) > 10 else ''}" if known else "no run has recorded a checkpoint in this repository"
        if next(iter(repo.store.list(f"{PINS_PREFIX}{_run_key(run)}/")), None) is not None:
            hint = f"it has pins whose entries were never written (a save that stalled): `dataversion unpin --run {shlex.quote(run)}` removes them"
        raise NotFoundError(f"unknown run {run!r}: no checkpoint of it is recorded in {repo.url}", hint=hint)


def entries_of_run(repo: Repo, run: str) -> list[LineageEntry]:
    """The entries of one run, oldest first. NotFoundError if the run recorded nothing."""
    found = entries(repo, run=run)
    _require_run(repo, run, found)
    return found


def checkpoints_on_commit(repo: Repo, commit: str) -> list[LineageEntry]:
    """Every recorded checkpoint that trained on `commit` (a commit id), oldest first."""
    return entries(repo, commit=commit)


def pinned_entry_ids(repo: Repo) -> set[str]:
    """Entry keys whose pin still exists."""
    out = set()
    for info in repo.store.list(PINS_PREFIX):
        out.add(LINEAGE_PREFIX + info.key[len(PINS_PREFIX):])
    return out


@dataclass(frozen=True)
class Pin:
    """One pin object, `pins/<run>/<id>.json`: a gc root for `commits`.

    `entry` is the key of its lineage entry, which may not exist (the save's entry write
    stalled or failed after the pin). A pin that cannot be parsed has no commits and no
    checkpoint (`readable` False): gc refuses to run while it exists."""

    key: str
    run: str
    id: str
    commits: tuple[str, ...]
    checkpoint: str | None
    readable: bool = True

    @property
    def entry(self) -> str:
        return LINEAGE_PREFIX + self.key[len(PINS_PREFIX):]

    @property
    def unpinned_key(self) -> str:
        return UNPINNED_PREFIX + self.key[len(PINS_PREFIX):]


def _parse_pin(key: str, data: bytes) -> Pin:
    rest = key[len(PINS_PREFIX):]
    run_part, _, name = rest.rpartition("/")
    run, eid = unquote(run_part) if run_part else DEFAULT_RUN, name[: -len(".json")] if name.endswith(".json") else name
    try:
        d = json.loads(data)
        commits = d["commits"]
        if not isinstance(commits, list) or not all(isinstance(c, str) for c in commits):
            raise TypeError("commits must be a list of commit ids")
        ckpt = d.get("checkpoint")
        return Pin(key, str(d.get("run") or run), eid, tuple(commits), ckpt if isinstance(ckpt, str) else None)
    except (ValueError, KeyError, TypeError, AttributeError):
        return Pin(key, run, eid, (), None, readable=False)


def pins(repo: Repo, *, run: str | None = None) -> list[Pin]:
    """The pins (of one run), oldest first, read from the pins themselves: also those whose
    lineage entry was never written."""
    prefix = PINS_PREFIX + (_run_key(run) + "/" if run is not None else "")
    keys = [i.key for i in repo.store.list(prefix)]
    out = [_parse_pin(k, data) for k, data in zip(keys, _read_many(repo, keys)) if data is not None]
    out.sort(key=lambda p: (p.id, p.key))
    return out


@dataclass(frozen=True)
class Release:
    """What `unpin` released: one pin (`had_pin`), or an entry whose pin was already gone
    (unpinned before releases were recorded, or removed by hand) whose release it recorded."""

    id: str
    run: str
    commits: tuple[str, ...]
    checkpoint: str | None
    entry: str
    had_pin: bool


def _record_release(repo: Repo, key: str, rel: Release) -> None:
    d = {"entry": rel.entry, "pin": PINS_PREFIX + rel.entry[len(LINEAGE_PREFIX):], "run": rel.run,
         "commits": list(rel.commits), "checkpoint": rel.checkpoint, "had_pin": rel.had_pin,
         "unpinned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    repo.store.put_if_absent(key, _json(d))  # an earlier release of the same entry stands


def unpin(repo: Repo, *, run: str | None = None, checkpoint: str | None = None) -> list[Release]:
    """Delete the pins of a run and/or of a checkpoint; record each release.

    Pins are found from the pins (`pins`: their key holds the run, their body the
    checkpoint), so a pin whose lineage entry was never written is removed too. For each
    pin, `unpinned/<run>/<id>.json` is written first, then the pin is deleted (a failure in
    between leaves the pin: nothing is lost); entries themselves stay. An entry of the
    selection whose pin is already gone without a recorded release gets its release
    recorded (`had_pin` False): that is how `verify` tells a commit released on purpose,
    then collected, from a lost one. With `run` alone, a pin under that run that cannot be
    parsed is removed too (gc refuses to run while it exists).

    Returns what was released, oldest first. NotFoundError for a run with neither pins nor
    entries, or a checkpoint no pin or entry names. gc may then collect the commits unless
    something else (a ref, the reflog, another pin) still holds them.
    """
    if run is None and checkpoint is None:
        raise BadInputError("say what to unpin: a run or a checkpoint")
    found_pins = pins(repo, run=run)
    found = entries(repo, run=run)
    if run is not None and not found_pins:
        _require_run(repo, run, found)
    pin_keys = {p.key for p in found_pins}
    if checkpoint is not None:
        loc = checkpoint_location(checkpoint)
        found = [e for e in found if e.checkpoint == loc]
        named = {e.key for e in found}
        found_pins = [p for p in found_pins if p.checkpoint == loc or p.entry in named]
        if not found_pins and not found:
            raise NotFoundError(f"no recorded checkpoint at {loc}" + (f" in run {run!r}" if run else ""),
                                hint="list them with `dataversion lineage --json`")
    released = {i.key for i in repo.store.list(UNPINNED_PREFIX + (_run_key(run) + "/" if run is not None else ""))}
    done: list[Release] = []
    for p in found_pins:
        rel = Release(p.id, p.run, p.commits, p.checkpoint, p.entry, had_pin=True)
        _record_release(repo, p.unpinned_key, rel)
        repo.store.delete(p.key)
        done.append(rel)
    for e in found:
        if e.pin_key not in pin_keys and e.unpinned_key not in released:
            rel = Release(e.id, e.run, (e.commit,), e.checkpoint, e.key, had_pin=False)
            _record_release(repo, e.unpinned_key, rel)
            done.append(rel)
    done.sort(key=lambda r: (r.id, r.entry))
    return done


# --------------------------------------------------------------------------- seen-by
class _CommitIndex:
    """Per commit: content-block sizes (what the order is built over) and record id -> flat
    index (its rank in id order: a content-tree lookup, O(log N), no shard read)."""

    def __init__(self, repo: Repo, commit: str):
        self.repo, self.commit = repo, commit
        if not repo.store.exists(commit_key(commit)):
            raise NotFoundError(f"commit {commit} named by a lineage entry no longer exists in {repo.url}")
        self.sizes = block_sizes(repo, commit)
        self.offsets = np.concatenate([[0], np.cumsum(np.asarray(self.sizes, dtype=np.int64))])

    @property
    def num_records(self) -> int:
        return int(self.offsets[-1])

    def flat_index(self, record_id: str) -> int | None:
        """The record's flat index (rank in id order), or None if the commit does not hold it."""
        rank = int(self.repo.tree(self.commit).index_of(np.frombuffer(bytes.fromhex(record_id), dtype="S16"))[0])
        return None if rank < 0 else rank

    def all_ids(self) -> np.ndarray:
        return self.repo.tree(self.commit).entries()["id"]


def _normalize_record_id(record_id: str) -> str:
    rid = record_id.strip().lower()
    if len(rid) != 32 or any(c not in "0123456789abcdef" for c in rid):
        raise BadInputError(f"invalid record id {record_id!r}: expected 32 hex characters")
    return rid


def _order(sizes: tuple[int, ...], e: LineageEntry, epoch: int) -> EpochOrder:
    return EpochOrder(sizes, seed=e.seed, epoch=epoch, shuffle=e.shuffle, window=e.window)


def _position_of(order: EpochOrder, flat: int) -> int:
    """Where the record at flat index `flat` lies in this epoch's order: O(window + shards)."""
    shard, row = order.flat_to_shard_row(np.array([flat]))
    k = int(np.flatnonzero(order.shard_order == shard[0])[0])
    q = int(order._concat_offsets[k] + row[0])
    if not order.shuffle:
        return q
    w = q // order.window
    return w * order.window + int(np.flatnonzero(order._window_perm(w) == q - w * order.window)[0])


@dataclass(frozen=True)
class _Segment:
    """What an entry's run consumed on one commit: epochs [first_epoch, last.epoch) + a prefix of last.epoch."""

    commit: str
    first_epoch: int
    last: LineageEntry
    epoch_ends: dict[int, int | None]  # drop: end position of each earlier epoch (None: every record)


def _segments(entry: LineageEntry, history: list[LineageEntry], n_of: dict[str, int]) -> list[_Segment]:
    """The consumption segments of `entry`, from its run's entries up to it (see module doc)."""
    h = [e for e in history if e.run == entry.run and e.id <= entry.id]
    if not h or h[-1].id != entry.id:
        h.append(entry)
    out = []
    first_commit = h[0].commit
    for c in dict.fromkeys(e.commit for e in h):
        on_c = [e for e in h if e.commit == c]
        last = on_c[-1]
        first_epoch = 0 if c == first_commit else min(e.epoch for e in on_c)
        ends: dict[int, int | None] = {}
        n = n_of[c]
        for ep in range(first_epoch, last.epoch):
            if last.remainder == "pad":
                ends[ep] = None
                continue
            in_ep = [e for e in on_c if e.epoch == ep]
            ref = in_ep[-1] if in_ep else last
            step = (ref.batch_size or 1) * ref.world_size
            p = ref.position if in_ep else 0
            ends[ep] = p + (n - p) // step * step
        out.append(_Segment(c, first_epoch, last, ends))
    return out


def checkpoints_that_saw(repo: Repo, record_id: str, *, commit: str | None = None) -> list[LineageEntry]:
    """Every recorded checkpoint whose run had consumed `record_id` when it was saved.

    Recomputed from the pure order: per (commit, seed, epoch) one O(window) lookup of the
    record's position, never a replay. `commit` restricts the answer to checkpoints saved on it.
    """
    rid = _normalize_record_id(record_id)
    all_entries = entries(repo)
    n_of: dict[str, int] = {}
    flat_of: dict[str, int | None] = {}
    for c in dict.fromkeys(e.commit for e in all_entries):
        try:
            idx = _CommitIndex(repo, c)
        except NotFoundError:  # collected after unpinning: it holds nothing to answer for
            n_of[c], flat_of[c] = 0, None
            continue
        n_of[c], flat_of[c] = idx.num_records, idx.flat_index(rid)
    positions: dict[tuple, int] = {}
    sizes_of: dict[str, tuple[int, ...]] = {}

    def position(c: str, e: LineageEntry, epoch: int) -> int:
        key = (c, e.seed, epoch, e.shuffle, e.window)
        if key not in positions:
            if c not in sizes_of:
                sizes_of[c] = block_sizes(repo, c)
            positions[key] = _position_of(_order(sizes_of[c], e, epoch), flat_of[c])  # type: ignore[arg-type]
        return positions[key]

    out = []
    for x in all_entries:
        if commit is not None and x.commit != commit:
            continue
        for seg in _segments(x, all_entries, n_of):
            if flat_of[seg.commit] is None:
                continue
            last = seg.last
            if position(seg.commit, last, last.epoch) < last.position or any(
                end is None or position(seg.commit, last, ep) < end for ep, end in seg.epoch_ends.items()
            ):
                out.append(x)
                break
    return out


def records_seen(repo: Repo, entry: LineageEntry) -> dict[str, np.ndarray]:
    """Which records the checkpoint of `entry` had seen: commit -> boolean mask in id order.

    Use `seen_record_ids` for the ids themselves. Cost: one vectorized pass over each epoch's
    order (about 0.1 s per million records and epoch), no payload read.
    """
    all_entries = entries(repo, run=entry.run)
    idx = {c: _CommitIndex(repo, c) for c in dict.fromkeys([*(e.commit for e in all_entries), entry.commit])}
    n_of = {c: i.num_records for c, i in idx.items()}
    out: dict[str, np.ndarray] = {}
    for seg in _segments(entry, all_entries, n_of):
        sizes = idx[seg.commit].sizes
        last = seg.last
        seen = _order(sizes, last, last.epoch).positions_of() < last.position
        for ep, end in seg.epoch_ends.items():
            if end is None:
                seen[:] = True
                break
            seen |= _order(sizes, last, ep).positions_of() < end
        out[seg.commit] = seen
    return out


def seen_record_ids(repo: Repo, entry: LineageEntry) -> set[str]:
    """The record ids (hex) the checkpoint of `entry` had seen (reads the content trees)."""
    out: set[str] = set()
    for c, mask in records_seen(repo, entry).items():
        ids = _CommitIndex(repo, c).all_ids()[mask]
        raw = ids.tobytes().hex()
        out.update(raw[k : k + 32] for k in range(0, len(raw), 32))
    return out


def entry_dicts(repo: Repo, found: Iterable[LineageEntry]) -> list[dict[str, Any]]:
    """JSON-ready entries with `pinned` (whether the entry's pin still exists)."""
    pinned = pinned_entry_ids(repo)
    return [{**e.to_dict(), "pinned": e.key in pinned} for e in found]
