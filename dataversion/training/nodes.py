"""Tree-node bundles: the content-tree and packing-index nodes one content block needs, kept
as one file in the read tier, so a worker locates a block without one read per node.

Locating a block (`ObjectDB.locate`: the packing's index checked against the content tree
over the block's range) walks ~700 nodes per 16,384 records in each tree; on a local store
each is a file, and every worker of every epoch is a fresh process that reads them all again
(~1 s of CPU per worker per 200,000 records, most of a warm epoch's work). The first process
to locate a block writes the nodes of both walks into one bundle (`LocalDiskCache.put_blob`);
later ones put the bundle's nodes into the process's node cache (`tree.NODE_CACHE`) and run
the same `locate`. Nothing is trusted: a node enters the cache only if its bytes hash to its
id (the check `tree` makes on every read), and the walk starts from the commit's content
root and the checked packing's index root as always. A node missing or damaged in a bundle
is read from the store by `locate` itself.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa

from ..errors import CorruptObjectError
from ..tree import (
    EMPTY_ROOT,
    NODE_CACHE,
    Node,
    decode_node,
    encode_inner,
    encode_leaf,
    node_id_of,
    read_node,
)

BUNDLE_SCHEMA = pa.schema([("id", pa.string()), ("data", pa.binary())])


def bundle_name(content_root: str, index_root: str, start: int, stop: int) -> str:
    """The blob name of the nodes covering ranks [start, stop) of both trees."""
    key = hashlib.sha256(f"nodes:{content_root}:{index_root}:{start}:{stop}".encode()).hexdigest()[:32]
    return key + ".nodes"


def range_node_ids(store: Any, root: str, start: int, stop: int) -> list[str]:
    """Every node a walk over ranks [start, stop) of the tree at `root` reads (root first)."""
    out: list[str] = []
    if root == EMPTY_ROOT or stop <= start:
        return out

    def walk(nid: str, offset: int) -> None:
        out.append(nid)
        node = read_node(store, nid)
        if node.is_leaf:
            return
        for child, count in zip(node.children, node.counts):
            if offset < stop and offset + count > start:
                walk(child, offset)
            offset += count

    walk(root, 0)
    return out


def _encode(node: Node) -> bytes:
    if node.is_leaf:
        return encode_leaf(node.entries)
    return encode_inner(node.dtype, list(node.nibbles), list(node.children), list(node.counts))


def encode_bundle(store: Any, node_ids: list[str]) -> bytes:
    """The nodes (read, hence checked, through `tree`) as an Arrow IPC file of (id, bytes)."""
    ids = list(dict.fromkeys(node_ids))
    datas = [_encode(read_node(store, n)) for n in ids]
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, BUNDLE_SCHEMA) as w:
        w.write_table(pa.table({"id": ids, "data": datas}, schema=BUNDLE_SCHEMA))
    return sink.getvalue().to_pybytes()


def load_bundle(store: Any, data: bytes) -> int:
    """Put the bundle's nodes whose bytes hash to their ids into this process's node cache;
    how many. A bundle that does not parse adds nothing (its nodes are read from the store)."""
    try:
        table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
        ids, datas = table.column("id").to_pylist(), table.column("data").to_pylist()
    except (pa.ArrowInvalid, OSError, KeyError):
        return 0
    n = 0
    for nid, raw in zip(ids, datas):
        if raw is None or node_id_of(raw) != nid:
            continue  # damaged: locate reads (and checks) this node from the store
        try:
            node = decode_node(raw, nid)
        except CorruptObjectError:  # same: left to locate's own read
            continue
        NODE_CACHE.put((store.url, nid), node)
        n += 1
    return n
