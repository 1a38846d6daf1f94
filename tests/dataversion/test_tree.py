"""The content tree (dataversion/tree.py): history independence, lookups, diff, node sharing."""

from __future__ import annotations

import numpy as np
import pytest

from dataversion.errors import CorruptObjectError
from dataversion.stores.memory import MemoryStore
from dataversion.tree import (
    EMPTY_ROOT,
    ENTRY,
    INDEX,
    LEAF_MAX,
    NODE_CACHE,
    TreeReader,
    TreeWriter,
    encode_inner,
    encode_leaf,
    node_key,
)


def _entries(rng: np.random.Generator, n: int) -> np.ndarray:
    e = np.zeros(n, dtype=ENTRY)
    e["id"] = np.frombuffer(rng.bytes(16 * n), dtype="S16")
    e["digest"] = np.frombuffer(rng.bytes(16 * n), dtype="S16")
    return e


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.tobytes() == b.tobytes()


@pytest.fixture()
def store() -> MemoryStore:
    NODE_CACHE.clear()
    return MemoryStore()


def test_empty_tree_is_a_constant_never_stored(store):
    w = TreeWriter(store)
    assert w.build(np.empty(0, ENTRY)) == EMPTY_ROOT
    assert not list(store.list(""))
    r = TreeReader(store, EMPTY_ROOT)
    assert len(r) == 0 and r.entries().size == 0 and not r.contains(np.array([b"x" * 16], "S16")).any()
    one = _entries(np.random.default_rng(0), 1)
    root = w.apply(EMPTY_ROOT, one)
    assert w.apply(root, deletes=one["id"]) == EMPTY_ROOT


@pytest.mark.parametrize("n", [0, 1, LEAF_MAX, LEAF_MAX + 1, 5000])
def test_build_sorts_and_reads_back(store, n):
    e = _entries(np.random.default_rng(n), n)
    root = TreeWriter(store).build(e[::-1])
    r = TreeReader(store, root)
    got = r.entries()
    assert len(r) == n
    assert _same(got, np.sort(e, order="id"))


def test_history_independent_under_random_insert_delete_sequences(store):
    rng = np.random.default_rng(1)
    universe = _entries(rng, 3000)
    w = TreeWriter(store)
    for trial in range(6):
        root = EMPTY_ROOT
        held = np.zeros(len(universe), bool)
        for _step in range(25):
            k = int(rng.integers(1, 400))
            idx = rng.choice(len(universe), size=k, replace=False)
            if rng.random() < 0.35:
                root = w.apply(root, deletes=universe["id"][idx])
                held[idx] = False
            else:
                root = w.apply(root, universe[idx])
                held[idx] = True
            if trial == 0:  # the incremental tree equals the tree built from scratch at every step
                assert root == w.build(universe[held])
        assert root == w.build(universe[held])
        assert _same(TreeReader(store, root).entries(), np.sort(universe[held], order="id"))


def test_upsert_replaces_the_entry_of_an_id(store):
    e = _entries(np.random.default_rng(2), 500)
    w = TreeWriter(store)
    root = w.build(e)
    changed = e[10:11].copy()
    changed["digest"] = b"z" * 16
    root2 = w.apply(root, changed)
    assert root2 != root
    found, got = TreeReader(store, root2).lookup(e["id"][10:11])
    assert found.all() and got["digest"][0] == b"z" * 16
    e2 = e.copy()
    e2[10] = changed[0]
    assert root2 == w.build(e2)
    # delete + upsert of one id in the same call: the upsert wins
    assert w.apply(root, changed, deletes=changed["id"]) == root2


def test_lookup_contains_and_index_of(store):
    rng = np.random.default_rng(3)
    e = _entries(rng, 4000)
    root = TreeWriter(store).build(e)
    r = TreeReader(store, root)
    absent = _entries(rng, 50)["id"]
    q = np.concatenate([e["id"][::7], absent])
    found, got = r.lookup(q)
    assert found[: len(e[::7])].all() and not found[len(e[::7]) :].any()
    assert _same(got[: len(e[::7])], e[::7])
    assert (r.contains(q) == found).all()
    s = np.sort(e, order="id")
    ranks = r.index_of(np.concatenate([s["id"][[0, 17, 3999]], absent[:2]]))
    assert ranks.tolist() == [0, 17, 3999, -1, -1]
    assert _same(r.entries_at(100, 250), s[100:250])


def test_lookup_reads_only_the_queried_paths(store):
    e = _entries(np.random.default_rng(4), 20000)
    root = TreeWriter(store).build(e)
    NODE_CACHE.clear()
    store.stats.clear()
    TreeReader(store, root).contains(e["id"][:3])
    gets, got = store.stats["GET"], store.stats["GET_BYTES"]
    nodes = len(TreeReader(store, root).node_ids())
    assert gets <= 3 * 4 < nodes / 20
    assert got < 3 * 4 * 16 * 1024  # node ranges, not the node pack


def test_apply_touches_only_changed_paths_and_shares_nodes(store):
    rng = np.random.default_rng(5)
    e = _entries(rng, 20000)
    w = TreeWriter(store)
    root = w.build(e)
    before = set(TreeReader(store, root).node_ids())
    NODE_CACHE.clear()
    store.stats.clear()
    w2 = TreeWriter(store)
    root2 = w2.apply(root, _entries(rng, 5), deletes=e["id"][:5])
    assert w2.nodes_written <= 10 * 5
    assert store.stats["GET"] <= 10 * 5
    after = set(TreeReader(store, root2).node_ids())
    assert len(before & after) > len(before) - 50  # almost every node shared


def test_diff_equals_set_difference_and_skips_shared_subtrees(store):
    rng = np.random.default_rng(6)
    base = _entries(rng, 10000)
    w = TreeWriter(store)
    a = w.build(base)
    added = _entries(rng, 30)
    changed = base[100:105].copy()
    changed["digest"] = b"q" * 16
    removed = base["id"][200:220]
    b = w.apply(a, np.concatenate([added, changed]), deletes=removed)
    NODE_CACHE.clear()
    store.stats.clear()
    only_a, only_b = TreeReader(store, a).diff(b)
    assert store.stats["GET"] < 200
    key = lambda x: set(x.tobytes()[i : i + 32] for i in range(0, len(x.tobytes()), 32))  # noqa: E731
    ea, eb = TreeReader(store, a).entries(), TreeReader(store, b).entries()
    assert key(only_a) == key(ea) - key(eb)
    assert key(only_b) == key(eb) - key(ea)
    assert set(only_b["id"].tolist()) == set(added["id"].tolist()) | set(changed["id"].tolist())
    assert TreeReader(store, a).diff(a)[0].size == 0
    ga, gb = TreeReader(store, EMPTY_ROOT).diff(a)
    assert ga.size == 0 and len(gb) == len(base)


def test_node_ids_walks_shared_nodes_once(store):
    rng = np.random.default_rng(7)
    e = _entries(rng, 3000)
    w = TreeWriter(store)
    a = w.build(e)
    b = w.apply(a, _entries(rng, 1))
    seen: set[str] = set()
    na = TreeReader(store, a).node_ids(seen)
    nb = TreeReader(store, b).node_ids(seen)
    assert set(na).isdisjoint(nb) and 0 < len(nb) <= 4
    # every stored object is one the two trees read from: their roots and node packs
    keys = TreeReader(store, a).object_keys() | TreeReader(store, b).object_keys()
    assert {k.key for k in store.list("")} == keys
    assert {node_key(a), node_key(b)} <= keys and len(keys) == 4


def test_blocks_depend_on_the_entry_set_only(store):
    rng = np.random.default_rng(8)
    e = _entries(rng, 30000)
    w = TreeWriter(store)
    root = w.build(e)
    blocks = TreeReader(store, root).blocks(4096)
    assert sum(blocks) == 30000 and max(blocks) <= 4096 and len(blocks) < 30000 / 1000
    stepwise = w.apply(w.build(e[:10000]), e[10000:])
    assert stepwise == root and TreeReader(store, stepwise).blocks(4096) == blocks


def test_other_entry_kinds_and_corruption(store):
    ix = np.zeros(300, dtype=INDEX)
    ix["id"] = np.frombuffer(np.random.default_rng(9).bytes(16 * 300), "S16")
    ix["shard"] = b"s" * 12
    ix["row"] = np.arange(300)
    root = TreeWriter(store, INDEX).build(ix)
    assert _same(TreeReader(store, root, INDEX).entries(), np.sort(ix, order="id"))
    pack = next(k.key for k in store.list("treepacks/"))
    data = bytearray(store.get(pack))
    assert data[:1] == b"L"  # children are stored before parents: the pack starts with a leaf
    data[20] ^= 1
    store.put(pack, bytes(data))
    NODE_CACHE.clear()
    with pytest.raises(CorruptObjectError, match="tree node .* is corrupt"):
        TreeReader(store, root, INDEX).entries()


def test_a_write_stores_one_node_pack_and_its_root(store):
    e = _entries(np.random.default_rng(11), 20000)
    w = TreeWriter(store)
    root = w.build(e)
    keys = sorted(k.key for k in store.list(""))
    assert len(keys) == 2 and node_key(root) in keys and keys[1].startswith("treepacks/")
    assert w.nodes_written == len(TreeReader(store, root).node_ids()) > 100
    # a change stores one more pack and the new root, whatever number of nodes it changes
    root2 = TreeWriter(store).apply(root, _entries(np.random.default_rng(12), 50))
    assert len(list(store.list("treepacks/"))) == 2 and store.exists(node_key(root2))


def test_hints_steer_reads_but_are_checked(store):
    """A hint that points at the wrong bytes is caught by the node's hash, never served."""
    e = _entries(np.random.default_rng(13), 5000)
    root = TreeWriter(store).build(e)
    data = bytearray(store.get(node_key(root)))
    k = bin(int.from_bytes(data[2:4], "little")).count("1")
    hint0 = len(data) - 9 * k  # the first child's (pack index, offset, length)
    first, second = data[hint0 : hint0 + 9], data[hint0 + 9 : hint0 + 18]
    data[hint0 : hint0 + 9], data[hint0 + 9 : hint0 + 18] = second, first  # swap two children's ranges
    store.put(node_key(root), bytes(data))
    NODE_CACHE.clear()
    with pytest.raises(CorruptObjectError, match="is corrupt"):
        TreeReader(store, root).entries()


def test_nodes_stored_one_object_each_are_read_and_changed(store):
    """The first format-2 writes stored every node as tree/<id> with no hints: such trees read,
    change and give the same roots as packed ones (the shape is a function of the entries)."""
    rng = np.random.default_rng(14)
    e, more = _entries(rng, 4000), _entries(rng, 30)
    root = TreeWriter(store).build(e)
    old = MemoryStore("old")
    for nid in TreeReader(store, root).node_ids():
        node = _find(store, root, nid)
        canon = encode_leaf(node.entries) if node.is_leaf else encode_inner(
            node.dtype, list(node.nibbles), list(node.children), list(node.counts))
        old.put(node_key(nid), canon)
    NODE_CACHE.clear()
    assert _same(TreeReader(old, root).entries(), np.sort(e, order="id"))
    assert TreeWriter(old).apply(root, more) == TreeWriter(store).apply(root, more)
    assert _same(TreeReader(old, TreeWriter(old).apply(root, more)).entries(),
                 np.sort(np.concatenate([e, more]), order="id"))


def _find(store, root, nid):
    frontier = [(root, None)]
    while frontier:
        nxt = []
        for n, loc in frontier:
            node = TreeReader(store, root)._node(n, loc)
            if n == nid:
                return node
            nxt.extend(node.kids())
        frontier = nxt
    raise KeyError(nid)


def test_entries_at_reads_a_level_at_a_time_not_a_leaf_at_a_time(store):
    """A range's covering nodes of one level are asked for together, so nodes side by side
    in the node pack come in one range read (the loader locates every block this way)."""
    e = _entries(np.random.default_rng(9), 20000)
    root = TreeWriter(store).build(e)
    s = np.sort(e, order="id")
    r = TreeReader(store, root)
    NODE_CACHE.clear()
    store.stats.clear()
    got = r.entries_at(5000, 15000)
    assert _same(got, s[5000:15000])
    covering = 10000 // LEAF_MAX  # at least this many leaves hold the range
    assert covering >= 20 and store.stats["GET"] <= 16  # one read per leaf before
    NODE_CACHE.clear()
    for a, b in [(0, 1), (19999, 20000), (0, 20000), (123, 4567)]:
        assert _same(r.entries_at(a, b), s[a:b])


def test_diff_of_a_spread_change_reads_a_level_at_a_time(store):
    """+1% of random ids touches most leaves; diff asks for each level's differing nodes of
    both trees together (one range read per run of neighbours), not two reads per node pair."""
    rng = np.random.default_rng(11)
    e = _entries(rng, 20000)
    w = TreeWriter(store)
    root = w.build(e)
    extra = _entries(rng, 200)
    root2 = w.apply(root, extra, deletes=e["id"][:50])
    NODE_CACHE.clear()
    store.stats.clear()
    mine, theirs = TreeReader(store, root2).diff(root)
    assert _same(mine, np.sort(extra, order="id"))
    assert _same(theirs, np.sort(e[:50], order="id"))
    assert store.stats["GET"] <= 40  # one read per differing node before: 344
    NODE_CACHE.clear()
    a, b = TreeReader(store, root).diff(root2)
    assert _same(a, theirs) and _same(b, mine)
