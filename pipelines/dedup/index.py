"""The near-duplicate index a commit carries, so the next run compares against the branch
without recomputing: MinHash signatures of its text records and the keys of its images
(`phash.image_keys`: pHash and 8x8 thumbnail).

Stored as the commit attachment `dedup_index` (an uncompressed `.npz`: signatures are
random bits and do not compress). It is cumulative: the parent's entries that are still
live plus this run's kept records. When it is missing (a commit made by `dataversion add`)
or was built with other parameters, it is rebuilt from the commit's records.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np

from ..config import DedupRules
from .phash import KEY_WORDS, as_image_keys, image_keys

ATTACHMENT = "dedup_index"


@dataclass
class DedupIndex:
    params: dict
    text_ids: np.ndarray  # 'S16'
    text_sigs: np.ndarray  # uint32 [n, num_perm]
    image_ids: np.ndarray  # 'S16'
    image_keys: np.ndarray  # uint64 [n, phash.KEY_WORDS]

    @classmethod
    def empty(cls, rules: DedupRules) -> DedupIndex:
        return cls(
            rules.index_params(),
            np.empty(0, "S16"),
            np.empty((0, rules.num_perm), np.uint32),
            np.empty(0, "S16"),
            np.empty((0, KEY_WORDS), np.uint64),
        )

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(
            buf,
            params=np.frombuffer(json.dumps(self.params, sort_keys=True).encode(), np.uint8),
            text_ids=self.text_ids.view(np.uint8).reshape(-1, 16)
            if len(self.text_ids)
            else np.empty((0, 16), np.uint8),
            text_sigs=self.text_sigs,
            image_ids=self.image_ids.view(np.uint8).reshape(-1, 16)
            if len(self.image_ids)
            else np.empty((0, 16), np.uint8),
            image_keys=self.image_keys,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> DedupIndex:
        z = np.load(io.BytesIO(data), allow_pickle=False)
        return cls(
            json.loads(z["params"].tobytes()),
            np.ascontiguousarray(z["text_ids"]).view("S16").ravel(),
            z["text_sigs"],
            np.ascontiguousarray(z["image_ids"]).view("S16").ravel(),
            # an index written before image keys held a thumbnail: bare pHashes
            as_image_keys(z["image_keys"] if "image_keys" in z.files else z["image_phash"]),
        )

    def restricted_to(self, live) -> DedupIndex:
        """Only the entries whose record id `live` holds (anything with `contains(ids) -> mask`)."""
        t = live.contains(self.text_ids) if len(self.text_ids) else np.zeros(0, bool)
        i = live.contains(self.image_ids) if len(self.image_ids) else np.zeros(0, bool)
        return DedupIndex(
            self.params, self.text_ids[t], self.text_sigs[t], self.image_ids[i], self.image_keys[i]
        )

    def extended(self, text_ids, text_sigs, image_ids, image_keys) -> DedupIndex:
        return DedupIndex(
            self.params,
            np.concatenate((self.text_ids, text_ids)),
            np.concatenate((self.text_sigs, text_sigs)) if len(text_sigs) else self.text_sigs,
            np.concatenate((self.image_ids, image_ids)),
            np.concatenate((self.image_keys, as_image_keys(image_keys))),
        )


def rebuild_index(repo, commit_id: str, rules: DedupRules) -> DedupIndex:
    """Compute the index of a commit from its records (text and images)."""
    from dataversion.records import ids_as_numpy

    from ..config import ImageRules
    from ..filters.image import check_image
    from .minhash import minhash_signatures

    t_ids, t_sigs, i_ids, i_ph = [], [], [], []
    for table in repo.read_rows(commit_id, ["modality", "text", "data"]):
        ids = ids_as_numpy(table.column("record_id"))
        mods = np.asarray(table.column("modality").to_pylist(), dtype=object)
        tmask = mods == "text"
        if tmask.any():
            texts = [t for t, m in zip(table.column("text").to_pylist(), tmask) if m]
            t_ids.append(ids[tmask])
            t_sigs.append(
                minhash_signatures(
                    texts, shingle_size=rules.shingle_size, num_perm=rules.num_perm, seed=rules.seed
                )
            )
        for k in np.flatnonzero(mods == "image").tolist():
            info = check_image(table.column("data")[k].as_py(), ImageRules(max_pixels=1 << 62))
            if hasattr(info, "phash"):
                i_ids.append(ids[k : k + 1])
                i_ph.append(image_keys([info.phash], [info.thumb]))
    empty = DedupIndex.empty(rules)
    return DedupIndex(
        rules.index_params(),
        np.concatenate(t_ids) if t_ids else empty.text_ids,
        np.concatenate(t_sigs) if t_sigs else empty.text_sigs,
        np.concatenate(i_ids) if i_ids else empty.image_ids,
        np.concatenate(i_ph) if i_ph else empty.image_keys,
    )


def load_parent_index(repo, parent: str | None, rules: DedupRules) -> DedupIndex:
    """The parent commit's index (restricted to its live records), rebuilt if needed."""
    if parent is None:
        return DedupIndex.empty(rules)
    data = repo.read_attachment(parent, ATTACHMENT)
    index = DedupIndex.from_bytes(data) if data else None
    if index is None or index.params != rules.index_params():
        return rebuild_index(repo, parent, rules)
    return index.restricted_to(Membership(repo, parent))


class Membership:
    """`contains(ids)` of one commit: content-tree lookups (O(len(ids) x log N) reads)."""

    def __init__(self, repo, commit_id: str):
        self.repo, self.commit_id = repo, commit_id

    def contains(self, ids: np.ndarray) -> np.ndarray:
        return self.repo.contains(self.commit_id, ids)


def scrub_index_bytes(data: bytes, erased_ids: np.ndarray) -> bytes | None:
    """An erasure's rewrite of a stored index: the entries (signatures, image keys) of
    `erased_ids` ('S16') removed; None when it holds none of them."""
    index = DedupIndex.from_bytes(data)
    t = np.isin(index.text_ids, erased_ids) if len(index.text_ids) else np.zeros(0, bool)
    i = np.isin(index.image_ids, erased_ids) if len(index.image_ids) else np.zeros(0, bool)
    if not t.any() and not i.any():
        return None
    return DedupIndex(
        index.params,
        index.text_ids[~t],
        index.text_sigs[~t],
        index.image_ids[~i],
        index.image_keys[~i],
    ).to_bytes()
