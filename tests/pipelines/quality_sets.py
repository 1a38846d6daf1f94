"""Labelled sets built from real files on a Debian machine, for the quality tests of issue
18 and `benchmarks/bench_quality.py` (which imports this module): image near-duplicates on
the Adwaita icon theme. Each builder returns None when its files are missing (the caller
skips with a reason)."""

from __future__ import annotations

import os

import numpy as np

ADWAITA = "/usr/share/icons/Adwaita"


def adwaita_icons(root: str = ADWAITA) -> tuple[list[str], list, np.ndarray] | None:
    """(paths, decoded RGBA images, icon label per image) of every PNG of the theme.

    Ground truth: the sizes of one icon (`48x48/actions/edit-copy.png` and
    `16x16/actions/edit-copy.png`) are duplicates; different icons are not, except names
    that are aliases of one picture (pixel-identical at some size, such as
    `*-rtl-symbolic` and `*-symbolic-rtl`): a person sees one icon there, so they share a
    label.
    """
    from PIL import Image

    if not os.path.isdir(root):
        return None
    paths = sorted(
        os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.endswith(".png")
    )
    if len(paths) < 100:
        return None
    names = [os.path.relpath(p, root).split("/", 1)[1] for p in paths]
    images = []
    for p in paths:
        with Image.open(p) as im:
            im.load()
            images.append(im.copy())
    parent = {n: n for n in names}

    def find(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    first: dict[tuple, str] = {}
    for n, im in zip(names, images):
        key = (im.size, im.convert("RGBA").tobytes())
        if key in first:
            parent[find(n)] = find(first[key])
        else:
            first[key] = n
    roots = [find(n) for n in names]
    ids = {r: i for i, r in enumerate(sorted(set(roots)))}
    return paths, images, np.array([ids[r] for r in roots])


def pairwise_pr(hashes: np.ndarray, labels: np.ndarray, max_distance: int) -> tuple[float, float]:
    """(precision, recall) over all pairs: predicted duplicate = Hamming distance <=
    `max_distance`, true duplicate = same label."""
    from pipelines.dedup.lsh import popcount64

    h = np.asarray(hashes, np.uint64)
    n = len(h)
    tp = fp = fn = 0
    for i in range(n - 1):
        d = popcount64(h[i + 1 :] ^ h[i])
        pred = d <= max_distance
        same = labels[i + 1 :] == labels[i]
        tp += int(np.count_nonzero(pred & same))
        fp += int(np.count_nonzero(pred & ~same))
        fn += int(np.count_nonzero(~pred & same))
    return tp / max(1, tp + fp), tp / max(1, tp + fn)
