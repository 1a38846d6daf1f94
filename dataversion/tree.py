"""The content tree: a content-addressed, history-independent 16-ary hash trie keyed by record id.

A node holds the entries (a numpy structured array whose first field is `id`, 16 bytes,
sorted by id) whose ids share the node's path of hex nibbles. A node with at most
`LEAF_MAX` entries is a leaf (its sorted entries); a bigger one is an inner node whose
children split its entries on the next nibble of the id (up to 16 children, each stored with
its entry count). So a node's shape is a function of the entry set alone: the same set gives
the same root whatever sequence of inserts and deletes built it, and a change touches only
the nodes on the paths of the changed ids (O(change x log N) reads and writes).

Nodes are serialized compactly (`L`/`I`, a dtype tag, then raw entries, or a child bitmap
and 32-byte child ids with u64 counts), named by the SHA-256 of their bytes and stored as
`tree/<sha256 hex>`. Inner nodes name their children by those hashes: the root is a Merkle
root over every entry. The empty tree is `EMPTY_ROOT`, a constant that is never stored.

Three entry kinds share the machinery (the tag in each node says which):
- `ENTRY` (content tree): record id + digest (BLAKE2b-128 of id, metadata, payload hash);
- `INDEX` (packing index): record id -> 12-byte shard-id prefix + row in that shard;
- `SHARDS` (packing shard table): 12-byte shard prefix (padded to 16) -> full shard id,
  rows, live rows, size.
Node reads are checked against their names and cached per process (LRU).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .errors import CorruptObjectError, NotFoundError
from .stores import Store

ENTRY = np.dtype([("id", "S16"), ("digest", "S16")])
INDEX = np.dtype([("id", "S16"), ("shard", "S12"), ("row", "<u4")])
SHARDS = np.dtype([("id", "S16"), ("shard", "S16"), ("rows", "<u4"), ("live", "<u4"), ("size", "<u8")])
_TAGS = {1: ENTRY, 2: INDEX, 3: SHARDS}
_TAG_OF = {ENTRY: 1, INDEX: 2, SHARDS: 3}

LEAF_MAX = 128
EMPTY_ROOT = "0" * 64
TREE_PREFIX = "tree/"
_CACHE_NODES = 32768
_IO_THREADS = 8


def node_key(node_id: str) -> str:
    """Store key of a tree node."""
    return f"{TREE_PREFIX}{node_id}"


@dataclass(frozen=True)
class Node:
    """A parsed node: a leaf (`entries`) or an inner node (`nibbles`, `children`, `counts`)."""

    dtype: np.dtype
    entries: np.ndarray | None = None
    nibbles: tuple[int, ...] = ()
    children: tuple[str, ...] = ()
    counts: tuple[int, ...] = ()

    @property
    def is_leaf(self) -> bool:
        return self.entries is not None

    @property
    def count(self) -> int:
        return len(self.entries) if self.entries is not None else sum(self.counts)


# ------------------------------------------------------------------ serialization
def encode_leaf(entries: np.ndarray) -> bytes:
    return b"L" + bytes([_TAG_OF[entries.dtype]]) + np.ascontiguousarray(entries).tobytes()


def encode_inner(dtype: np.dtype, nibbles: list[int], children: list[str], counts: list[int]) -> bytes:
    bitmap = 0
    for n in nibbles:
        bitmap |= 1 << n
    parts = [b"I", bytes([_TAG_OF[dtype]]), bitmap.to_bytes(2, "little")]
    for child, count in zip(children, counts):
        parts.append(bytes.fromhex(child))
        parts.append(int(count).to_bytes(8, "little"))
    return b"".join(parts)


def decode_node(data: bytes, node_id: str = "?") -> Node:
    """Parse a node's bytes (CorruptObjectError if they are not a node)."""
    try:
        kind, tag = data[:1], data[1]
        dtype = _TAGS[tag]
        if kind == b"L":
            body = data[2:]
            if len(body) % dtype.itemsize:
                raise ValueError("truncated entries")
            return Node(dtype, entries=np.frombuffer(body, dtype=dtype))
        if kind == b"I":
            bitmap = int.from_bytes(data[2:4], "little")
            nibbles = tuple(n for n in range(16) if bitmap >> n & 1)
            body = data[4:]
            if len(body) != 40 * len(nibbles):
                raise ValueError("inner node length does not match its bitmap")
            children = tuple(body[40 * i : 40 * i + 32].hex() for i in range(len(nibbles)))
            counts = tuple(int.from_bytes(body[40 * i + 32 : 40 * i + 40], "little") for i in range(len(nibbles)))
            return Node(dtype, nibbles=nibbles, children=children, counts=counts)
        raise ValueError(f"unknown node kind {kind!r}")
    except (IndexError, KeyError, ValueError) as e:
        raise CorruptObjectError(f"tree node {node_id} cannot be parsed: {e}") from e


def node_id_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ node cache (per process)
class _NodeCache:
    def __init__(self, size: int):
        self.size = size
        self._d: OrderedDict[tuple[str, str], Node] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> Node | None:
        with self._lock:
            node = self._d.get(key)
            if node is not None:
                self._d.move_to_end(key)
            return node

    def put(self, key: tuple[str, str], node: Node) -> None:
        with self._lock:
            self._d[key] = node
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()


NODE_CACHE = _NodeCache(_CACHE_NODES)


def _read_nodes(store: Store, node_ids: list[str], *, cached: bool = True) -> list[Node]:
    """Nodes by id, checked against their names (parallel reads on a remote store)."""
    out: list[Node | None] = [NODE_CACHE.get((store.url, n)) if cached else None for n in node_ids]
    missing = [i for i, n in enumerate(out) if n is None]

    def fetch(node_id: str) -> Node:
        try:
            data = store.get(node_key(node_id))
        except NotFoundError:
            raise NotFoundError(f"tree node {node_id} is missing from {store.url}", hint="run `dataversion verify`") from None
        actual = node_id_of(data)
        if actual != node_id:
            raise CorruptObjectError(f"tree node {node_id} is corrupt: its bytes hash to {actual}", hint="run `dataversion verify`")
        node = decode_node(data, node_id)
        NODE_CACHE.put((store.url, node_id), node)
        return node

    if len(missing) > 1 and store.local_path(node_key(node_ids[missing[0]])) is None:
        with ThreadPoolExecutor(max_workers=_IO_THREADS) as pool:
            for i, node in zip(missing, pool.map(fetch, [node_ids[i] for i in missing])):
                out[i] = node
    else:
        for i in missing:
            out[i] = fetch(node_ids[i])
    return out  # type: ignore[return-value]


def read_node(store: Store, node_id: str) -> Node:
    return _read_nodes(store, [node_id])[0]


# ------------------------------------------------------------------ id helpers
def _nibbles(ids: np.ndarray, depth: int) -> np.ndarray:
    """The hex nibble at `depth` (0 = high nibble of byte 0) of each 16-byte id."""
    raw = np.frombuffer(np.ascontiguousarray(ids).tobytes(), dtype=np.uint8).reshape(-1, 16)[:, depth // 2]
    return (raw >> 4) if depth % 2 == 0 else (raw & 0x0F)


def _split(ids: np.ndarray, depth: int) -> list[tuple[int, int, int]]:
    """(nibble, start, end) runs of id-sorted `ids` sharing the nibble at `depth`."""
    if len(ids) == 0:
        return []
    nib = _nibbles(ids, depth)
    bounds = np.searchsorted(nib, np.arange(17))
    return [(n, int(bounds[n]), int(bounds[n + 1])) for n in range(16) if bounds[n + 1] > bounds[n]]


def sorted_unique_ids(ids: np.ndarray) -> np.ndarray:
    """`ids` ('S16') sorted and deduplicated."""
    ids = np.asarray(ids, dtype="S16")
    if len(ids) < 2:
        return ids.copy()
    if (ids[1:] > ids[:-1]).all():
        return ids
    s = np.sort(ids)
    return s[np.concatenate([[True], s[1:] != s[:-1]])]


def _contains_sorted(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    if len(haystack) == 0 or len(needles) == 0:
        return np.zeros(len(needles), dtype=bool)
    pos = np.searchsorted(haystack, needles)
    pos[pos == len(haystack)] = 0
    return haystack[pos] == needles


def sort_entries(entries: np.ndarray) -> np.ndarray:
    """Entries sorted by id; a repeated id keeps its last occurrence."""
    if len(entries) < 2:
        return entries
    ids = entries["id"]
    if (ids[1:] > ids[:-1]).all():
        return entries
    order = np.argsort(ids, kind="stable")
    s = entries[order]
    keep = np.concatenate([s["id"][1:] != s["id"][:-1], [True]])
    return s[keep]


# ------------------------------------------------------------------ reading
def entries_in_order(nodes: dict[str, Node], root: str, dtype: np.dtype) -> np.ndarray:
    """The entries of the tree under `root`, in id order, from its nodes already read
    (`nodes`: node id -> Node, every node of that tree)."""
    parts: list[np.ndarray] = []

    def walk(nid: str) -> None:
        node = nodes[nid]
        if node.is_leaf:
            parts.append(node.entries)
        else:
            for c in node.children:
                walk(c)

    walk(root)
    # one join of the leaves' bytes: np.concatenate promotes a structured dtype once per
    # array in Python, which costs more than the walk on a tree of thousands of leaves
    return np.frombuffer(bytearray().join([p.tobytes() for p in parts]), dtype) if parts else np.empty(0, dtype)


class TreeReader:
    """Queries over one tree root. Every node read is checked against its name."""

    def __init__(self, store: Store, root: str, dtype: np.dtype = ENTRY, *, cached: bool = True):
        self.store, self.root, self.dtype, self.cached = store, root, dtype, cached

    def _nodes(self, node_ids: list[str]) -> list[Node]:
        return _read_nodes(self.store, node_ids, cached=self.cached)

    def _node(self, node_id: str) -> Node:
        return self._nodes([node_id])[0]

    def _empty(self) -> np.ndarray:
        return np.empty(0, dtype=self.dtype)

    def __len__(self) -> int:
        if self.root == EMPTY_ROOT:
            return 0
        return self._node(self.root).count

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask, entries) for 'S16' `ids`: which are in the tree, and their entries aligned
        with `ids` (zeroed where absent). Reads only the nodes on the queried paths."""
        ids = np.asarray(ids, dtype="S16")
        found = np.zeros(len(ids), dtype=bool)
        out = np.zeros(len(ids), dtype=self.dtype)
        if self.root == EMPTY_ROOT or len(ids) == 0:
            return found, out
        order = np.argsort(ids, kind="stable")
        sids = ids[order]
        frontier = [(self.root, 0, 0, len(sids))]
        while frontier:
            nodes = self._nodes([f[0] for f in frontier])
            nxt = []
            for (_, depth, a, b), node in zip(frontier, nodes):
                q = sids[a:b]
                if node.is_leaf:
                    e = node.entries
                    if len(e) == 0:
                        continue
                    pos = np.searchsorted(e["id"], q)
                    pos[pos == len(e)] = 0
                    hit = e["id"][pos] == q
                    idx = order[a:b][hit]
                    found[idx] = True
                    out[idx] = e[pos[hit]]
                    continue
                children = dict(zip(node.nibbles, node.children))
                for nib, s, t in _split(q, depth):
                    child = children.get(nib)
                    if child is not None:
                        nxt.append((child, depth + 1, a + s, a + t))
            frontier = nxt
        return found, out

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """A boolean mask: which of `ids` ('S16') the tree holds."""
        return self.lookup(ids)[0]

    def entries(self) -> np.ndarray:
        """Every entry, sorted by id (reads the whole tree)."""
        return self._gather(self.root)

    def _gather(self, node_id: str) -> np.ndarray:
        if node_id == EMPTY_ROOT:
            return self._empty()
        frontier = [node_id]
        # breadth-first reads (parallel on remote stores), then an id-ordered assembly
        tree: dict[str, Node] = {}
        while frontier:
            nodes = self._nodes(frontier)
            nxt = []
            for nid, node in zip(frontier, nodes):
                tree[nid] = node
                nxt.extend(node.children)
            frontier = nxt

        return entries_in_order(tree, node_id, self.dtype)

    def entries_at(self, start: int, stop: int) -> np.ndarray:
        """The entries of ranks [start, stop) in id order (reads only the nodes covering them)."""
        if self.root == EMPTY_ROOT or stop <= start:
            return self._empty()
        parts: list[np.ndarray] = []

        def walk(nid: str, offset: int) -> None:
            node = self._node(nid)
            if node.is_leaf:
                parts.append(node.entries[max(0, start - offset) : max(0, stop - offset)])
                return
            for child, count in zip(node.children, node.counts):
                if offset < stop and offset + count > start:
                    walk(child, offset)
                offset += count

        walk(self.root, 0)
        return np.concatenate(parts) if parts else self._empty()

    def index_of(self, ids: np.ndarray) -> np.ndarray:
        """The rank (place in id order) of each of `ids`, -1 where the tree lacks it."""
        ids = np.asarray(ids, dtype="S16")
        out = np.full(len(ids), -1, dtype=np.int64)
        for i in range(len(ids)):
            if self.root == EMPTY_ROOT:
                break
            q = ids[i : i + 1]
            nid, depth, offset = self.root, 0, 0
            while True:
                node = self._node(nid)
                if node.is_leaf:
                    pos = int(np.searchsorted(node.entries["id"], q[0]))
                    if pos < len(node.entries) and node.entries["id"][pos] == q[0]:
                        out[i] = offset + pos
                    break
                nib = int(_nibbles(q, depth)[0])
                nxt = None
                for n, child, count in zip(node.nibbles, node.children, node.counts):
                    if n == nib:
                        nxt = child
                        break
                    offset += count
                if nxt is None:
                    break
                nid, depth = nxt, depth + 1
        return out

    def diff(self, other_root: str) -> tuple[np.ndarray, np.ndarray]:
        """(entries only in this tree, entries only in `other_root`'s), each sorted by id.

        An id in both with different entries appears in both. Subtrees the two trees share
        (same node id) are skipped unread: the cost follows the difference."""
        mine: list[np.ndarray] = []
        theirs: list[np.ndarray] = []
        other = TreeReader(self.store, other_root, self.dtype, cached=self.cached)

        def walk(a: str, b: str) -> None:
            if a == b:
                return
            if a == EMPTY_ROOT or b == EMPTY_ROOT:
                mine.append(self._gather(a))
                theirs.append(other._gather(b))
                return
            na, nb = self._nodes([a, b])
            if na.is_leaf or nb.is_leaf:
                ea, eb = self._gather(a), other._gather(b)
                ka = ea.view(np.dtype((np.void, ea.dtype.itemsize)))
                kb = eb.view(np.dtype((np.void, eb.dtype.itemsize)))
                mine.append(ea[~np.isin(ka, kb)])
                theirs.append(eb[~np.isin(kb, ka)])
                return
            ca, cb = dict(zip(na.nibbles, na.children)), dict(zip(nb.nibbles, nb.children))
            for nib in range(16):
                x, y = ca.get(nib, EMPTY_ROOT), cb.get(nib, EMPTY_ROOT)
                if x != y:
                    walk(x, y)

        walk(self.root, other_root)
        cat = lambda ps: np.concatenate(ps) if ps else self._empty()  # noqa: E731
        return cat(mine), cat(theirs)

    def node_ids(self, skip: set[str] | None = None) -> list[str]:
        """Every node id this tree reaches, not descending into ids in `skip` (gc's visited
        set: shared subtrees are walked once). Adds what it returns to `skip` when given."""
        seen = skip if skip is not None else set()
        out: list[str] = []
        frontier = [self.root] if self.root != EMPTY_ROOT and self.root not in seen else []
        for n in frontier:
            seen.add(n)
        while frontier:
            out.extend(frontier)
            nodes = self._nodes(frontier)
            nxt = []
            for node in nodes:
                for c in node.children:
                    if c not in seen:
                        seen.add(c)
                        nxt.append(c)
            frontier = nxt
        return out

    def blocks(self, target: int) -> list[int]:
        """The tree's entries cut into contiguous id ranges of about `target` entries: their
        sizes, in id order. A function of the entry set alone (the trie's shape): every subtree
        of at most `target` entries is kept whole, and consecutive ones are merged while they
        fit. Reads only the inner nodes above that size."""
        if self.root == EMPTY_ROOT:
            return []
        pieces: list[int] = []

        def walk(nid: str, count: int) -> None:
            if count <= target:
                pieces.append(count)
                return
            node = self._node(nid)
            if node.is_leaf:
                pieces.append(count)
                return
            for child, c in zip(node.children, node.counts):
                walk(child, c)

        walk(self.root, len(self))
        out: list[int] = []
        for p in pieces:
            if out and out[-1] + p <= target:
                out[-1] += p
            else:
                out.append(p)
        return out


# ------------------------------------------------------------------ writing
class TreeWriter:
    """Builds and changes trees, storing only the nodes that are new."""

    def __init__(self, store: Store, dtype: np.dtype = ENTRY, *, pending: dict[str, bytes] | None = None):
        """`pending`: a node buffer shared by several writers (of other entry kinds) so one
        `flush` stores all their new nodes in one batch."""
        self.store, self.dtype = store, dtype
        self.pending: dict[str, bytes] = {} if pending is None else pending
        self.nodes_written = 0
        self.bytes_written = 0

    def _emit_leaf(self, entries: np.ndarray) -> tuple[str, int]:
        if len(entries) == 0:
            return EMPTY_ROOT, 0
        data = encode_leaf(entries)
        nid = node_id_of(data)
        self.pending[nid] = data
        NODE_CACHE.put((self.store.url, nid), Node(self.dtype, entries=np.frombuffer(data[2:], dtype=self.dtype)))
        return nid, len(entries)

    def _emit_inner(self, nibbles: list[int], children: list[str], counts: list[int]) -> tuple[str, int]:
        data = encode_inner(self.dtype, nibbles, children, counts)
        nid = node_id_of(data)
        self.pending[nid] = data
        NODE_CACHE.put((self.store.url, nid), Node(self.dtype, nibbles=tuple(nibbles), children=tuple(children), counts=tuple(counts)))
        return nid, sum(counts)

    def _build(self, entries: np.ndarray, depth: int) -> tuple[str, int]:
        if len(entries) <= LEAF_MAX:
            return self._emit_leaf(entries)
        nibbles, children, counts = [], [], []
        for nib, a, b in _split(entries["id"], depth):
            cid, c = self._build(entries[a:b], depth + 1)
            nibbles.append(nib)
            children.append(cid)
            counts.append(c)
        return self._emit_inner(nibbles, children, counts)

    def flush(self) -> None:
        """Store the nodes built since the last flush (before anything names their root)."""
        items = list(self.pending.items())
        self.pending.clear()
        if not items:
            return
        self.store.put_many([(node_key(k), v) for k, v in items])
        self.nodes_written += len(items)
        self.bytes_written += sum(len(v) for _, v in items)

    def build(self, entries: np.ndarray) -> str:
        """Store the tree of `entries` (any order; a repeated id keeps the last); its root."""
        entries = sort_entries(np.asarray(entries, dtype=self.dtype))
        root, _ = self._build(entries, 0)
        self.flush()
        return root

    def apply(self, root: str, upserts: np.ndarray | None = None, deletes: np.ndarray | None = None,
              *, flush: bool = True) -> str:
        """The root of `root`'s tree with `upserts` added or replaced and `deletes` (ids)
        removed (a delete of an absent id does nothing; an id in both ends upserted).
        Reads and writes only the nodes on the changed paths."""
        ups = sort_entries(np.asarray(upserts, dtype=self.dtype)) if upserts is not None else np.empty(0, self.dtype)
        dels = sorted_unique_ids(deletes) if deletes is not None and len(deletes) else np.empty(0, "S16")
        if len(dels) and len(ups):
            dels = dels[~_contains_sorted(ups["id"], dels)]
        if not len(ups) and not len(dels):
            return root
        new_root, _ = self._apply(root, 0, ups, dels)
        if flush:
            self.flush()
        return new_root

    def _apply(self, nid: str, depth: int, ups: np.ndarray, dels: np.ndarray) -> tuple[str, int]:
        if nid == EMPTY_ROOT:
            return self._build(ups, depth)
        node = read_node(self.store, nid)
        if node.is_leaf:
            e = node.entries
            drop = _contains_sorted(dels, e["id"]) if len(dels) else np.zeros(len(e), bool)
            if len(ups):
                drop |= _contains_sorted(ups["id"], e["id"])
            if not drop.any() and not len(ups):
                return nid, len(e)
            merged = np.concatenate([e[~drop], ups])
            merged = merged[np.argsort(merged["id"], kind="stable")]
            return self._build(merged, depth)
        kids = dict(zip(node.nibbles, zip(node.children, node.counts)))
        up_runs = {n: (a, b) for n, a, b in _split(ups["id"], depth)}
        del_runs = {n: (a, b) for n, a, b in _split(dels, depth)}
        changed = False
        for nib in sorted(set(up_runs) | set(del_runs)):
            child, count = kids.get(nib, (EMPTY_ROOT, 0))
            ua, ub = up_runs.get(nib, (0, 0))
            da, db = del_runs.get(nib, (0, 0))
            if child == EMPTY_ROOT and ub == ua:
                continue
            new_child, new_count = self._apply(child, depth + 1, ups[ua:ub], dels[da:db])
            if new_child != child:
                changed = True
                if new_count:
                    kids[nib] = (new_child, new_count)
                else:
                    kids.pop(nib, None)
        if not changed:
            return nid, node.count
        total = sum(c for _, c in kids.values())
        if total <= LEAF_MAX:
            reader = TreeReader(self.store, EMPTY_ROOT, self.dtype)
            parts = [self._entries_of(child) for n, (child, _) in sorted(kids.items())]
            merged = np.concatenate(parts) if parts else reader._empty()
            return self._emit_leaf(merged)
        order = sorted(kids)
        return self._emit_inner(order, [kids[n][0] for n in order], [kids[n][1] for n in order])

    def _entries_of(self, nid: str) -> np.ndarray:
        """Entries under a node, including nodes built in this writer and not flushed yet."""
        node = NODE_CACHE.get((self.store.url, nid))
        if node is None and nid in self.pending:
            node = decode_node(self.pending[nid], nid)
        if node is None:
            node = read_node(self.store, nid)
        if node.is_leaf:
            return node.entries
        parts = [self._entries_of(c) for c in node.children]
        return np.concatenate(parts) if parts else np.empty(0, self.dtype)
