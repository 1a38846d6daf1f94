"""The sharded dedup steps decide exactly what the global decision (`decide_run`) decides,
on generated corpora (near-duplicate texts, exact copies, resized images, a branch), and
every duplicate points at a record that is kept or that the branch holds."""

import random

import numpy as np
import pyarrow as pa
import pytest
from pipeline_samples import png_bytes, words_doc

from dataversion.records import ids_as_numpy, ids_to_hex
from pipelines.config import IngestConfig
from pipelines.dedup.decide import decide_run
from pipelines.dedup.index import DedupIndex
from pipelines.dedup.phash import image_keys
from pipelines.dedup.sharded import IndexParent, NotConverged, run_local
from pipelines.dedup.steps import dedup_keys
from pipelines.process import WorkItem, process_objects


def _corpus(vocab, seed: int, n: int = 120, prefix: str = "d"):
    """(key, bytes) objects: base texts, light edits (near duplicates), heavy edits,
    exact copies (some of them copies of near duplicates), images and their resized JPEGs."""
    rng = random.Random(seed)
    objs = []
    for i in range(n):
        base = words_doc(rng, vocab, rng.randint(60, 160))
        objs.append((f"{prefix}/{i:04d}.txt", base))
        w = base.split()
        if i % 3 == 0:
            v = list(w)
            v[rng.randrange(len(v))] = rng.choice(vocab)
            objs.append((f"{prefix}/{i:04d}-near.txt", " ".join(v)))
            if i % 2 == 0:  # an exact copy of the near duplicate (a chain)
                objs.append((f"{prefix}/a-copy-{i:04d}.txt", " ".join(v)))
        if i % 5 == 0:
            v = list(w)
            for _ in range(int(len(v) * 0.12)):
                v[rng.randrange(len(v))] = rng.choice(vocab)
            objs.append((f"{prefix}/{i:04d}-far.txt", " ".join(v)))
        if i % 7 == 0:
            objs.append((f"{prefix}/copy/{i:04d}.txt", base))
    for i in range(6):
        objs.append((f"{prefix}/img/{i}.png", png_bytes(128, 96, seed=seed * 10 + i)))
        if i % 2 == 0:
            objs.append(
                (
                    f"{prefix}/img/{i}-small.jpg",
                    png_bytes(100, 75, seed=seed * 10 + i, fmt="JPEG", quality=70),
                )
            )
    rng.shuffle(objs)
    return [
        (WorkItem(k, "1-1", len(b)), b if isinstance(b, bytes) else b.encode()) for k, b in objs
    ]


def _tables(objs, config, batch=17):
    return [
        process_objects(objs[i : i + batch], config).candidates for i in range(0, len(objs), batch)
    ]


def _sharded(tables, parent, rules, parts):
    out = run_local(tables, parent, rules, parts)
    kept = sorted(s for t, _ in out.values() for s in t.column("source").to_pylist())
    dups = sorted((d for _, ds in out.values() for d in ds), key=lambda d: d["source"])
    return kept, dups


def _resolve(ref: dict, keys, parent_ids: set[str]) -> dict[str, str]:
    """The reference's duplicates with their targets resolved to a stored record."""
    id_of = {}
    for t in keys:
        id_of.update(
            zip(t.column("source").to_pylist(), ids_to_hex(ids_as_numpy(t.column("record_id"))))
        )
    kept_ids = {id_of[s] for s in ref["kept_sources"]}
    near_of = {d["record_id"]: d["duplicate_of"] for d in ref["duplicates"] if d["kind"] == "near"}
    out = {}
    for d in ref["duplicates"]:
        target = d["duplicate_of"]
        if target not in kept_ids and target not in parent_ids:
            target = near_of[target]
        out[d["source"]] = target
    return out


def _check_equal(tables, parent_index, contains, parent_ids, rules, parts):
    keys = [dedup_keys(t) for t in tables]
    ref = decide_run(keys, contains, parent_index, rules)
    kept, dups = _sharded(tables, IndexParent(parent_index, contains, rules), rules, parts)
    assert kept == sorted(ref["kept_sources"])
    assert {d["source"]: d["duplicate_of"] for d in dups} == _resolve(ref, keys, parent_ids)
    kept_set, kept_ids = set(kept), set()
    for t in tables:
        for s, i in zip(
            t.column("source").to_pylist(), ids_to_hex(ids_as_numpy(t.column("record_id")))
        ):
            if s in kept_set:
                kept_ids.add(i)
    for d in dups:  # every duplicate points at a stored record, with its evidence
        assert d["duplicate_of"] in kept_ids | parent_ids, d
        assert d["kind"] in ("exact", "near") and 0.0 < d["similarity"] <= 1.0
        assert d["cluster"] == d["duplicate_of"]
    return kept, dups, ref


@pytest.mark.parametrize("parts", [1, 3, 8])
def test_sharded_decisions_equal_the_global_decision(vocab, parts):
    config = IngestConfig()
    tables = _tables(_corpus(vocab, seed=11), config)
    rules = config.dedup
    kept, dups, ref = _check_equal(tables, DedupIndex.empty(rules), None, set(), rules, parts)
    kinds = {d["kind"] for d in dups}
    assert kinds == {"exact", "near"} and len(dups) == len(ref["duplicates"]) > 30
    # the chain: an exact copy of a near duplicate points at the near duplicate's original
    chained = [d for d in dups if d.get("via")]
    assert chained and all(d["via"] != d["duplicate_of"] for d in chained)


def test_sharded_decisions_against_a_branch_equal_the_global_decision(vocab):
    """Run 1 becomes the branch; run 2 (new texts, near duplicates and copies of run 1's)
    is decided against it."""
    config = IngestConfig()
    rules = config.dedup
    first = _corpus(vocab, seed=21, n=80, prefix="a")
    t1 = _tables(first, config)
    ref1 = decide_run([dedup_keys(t) for t in t1], None, DedupIndex.empty(rules), rules)
    all1 = pa.concat_tables(t1)
    kept1 = all1.filter(
        pa.array([s in set(ref1["kept_sources"]) for s in all1.column("source").to_pylist()])
    )
    ids = ids_as_numpy(kept1.column("record_id")).copy()
    mods = np.asarray(kept1.column("modality").to_pylist(), object)
    sigs = kept1.column("sig").combine_chunks().values.to_numpy().reshape(-1, rules.num_perm)
    ph = image_keys(
        kept1.column("phash").to_numpy().astype(np.uint64), kept1.column("thumb").to_pylist()
    )
    t_, i_ = mods == "text", mods == "image"
    # the branch's index in id order: the order the sharded steps rank branch records in
    to, io = np.argsort(ids[t_]), np.argsort(ids[i_])
    index = DedupIndex.empty(rules).extended(ids[t_][to], sigs[t_][to], ids[i_][io], ph[i_][io])
    sorted_ids = np.sort(ids)

    def contains(x):
        pos = np.minimum(np.searchsorted(sorted_ids, x), len(sorted_ids) - 1)
        return sorted_ids[pos] == x

    rng = random.Random(5)
    second = _corpus(vocab, seed=22, n=60, prefix="b")
    for item, data in rng.sample(first, 40):  # copies and light edits of the branch's records
        if item.key.endswith(".txt") and rng.random() < 0.5:
            w = data.decode().split()
            w[rng.randrange(len(w))] = "edited"
            data = " ".join(w).encode()
        second.append((WorkItem("b/from-a/" + item.key, "1-1", len(data)), data))
    for i in (1, 3):  # resized JPEGs of the branch's images
        data = png_bytes(90, 68, seed=21 * 10 + i, fmt="JPEG", quality=70)
        second.append((WorkItem(f"b/img/resized-{i}.jpg", "1-1", len(data)), data))
    parent_ids = set(ids_to_hex(ids))
    _, dups, _ = _check_equal(_tables(second, config), index, contains, parent_ids, rules, 4)
    assert any(d["duplicate_of"] in parent_ids and d["kind"] == "near" for d in dups)
    assert any(d["duplicate_of"] in parent_ids and d["kind"] == "exact" for d in dups)
    # resized copies of the branch's images are found through the branch's image keys
    near_img = [d for d in dups if d["kind"] == "near" and "resized-" in d["source"]]
    assert len(near_img) == 2 and all(d["duplicate_of"] in parent_ids for d in near_img)


@pytest.mark.parametrize("policy", ["longest", "shortest"])
def test_representative_policy_picks_by_length(policy):
    config = IngestConfig.from_dict({"dedup": {"representative": policy}})
    base = " ".join(f"word{i}" for i in range(200))
    objs = [
        (WorkItem("a.txt", "1-1", 1), base.encode()),
        (WorkItem("b.txt", "1-1", 1), (base + " extra tail").encode()),
        (WorkItem("c.txt", "1-1", 1), (base + " extra tail words here").encode()),
    ]
    kept, dups = _sharded(
        _tables(objs, config),
        IndexParent(DedupIndex.empty(config.dedup), None, config.dedup),
        config.dedup,
        2,
    )
    assert kept == (["c.txt"] if policy == "longest" else ["a.txt"])
    assert len(dups) == 2


def test_oldest_policy_and_the_branch_wins():
    config = IngestConfig.from_dict({"dedup": {"representative": "oldest"}})
    rules = config.dedup
    base = " ".join(f"word{i}" for i in range(200))
    objs = [
        (WorkItem(k, "1-1", 1), (base + s).encode()) for k, s in (("a.txt", ""), ("b.txt", " x"))
    ]
    tables = _tables(objs, config)
    out = run_local(
        tables,
        IndexParent(DedupIndex.empty(rules), None, rules),
        rules,
        2,
        mtimes={"a.txt": 200, "b.txt": 100},
    )
    kept = [s for t, _ in out.values() for s in t.column("source").to_pylist()]
    assert kept == ["b.txt"]


def test_long_chains_fail_loudly_past_max_rounds():
    """A chain of near duplicates longer than max_rounds hops is an error, never a silent
    wrong cluster."""
    rng = random.Random(3)
    words = [f"w{i}" for i in range(300)]
    objs = []
    for i in range(12):  # each step changes a few words: neighbours similar, ends not
        for _ in range(4):
            words[rng.randrange(len(words))] = f"x{rng.randrange(10**6)}"
        objs.append((WorkItem(f"{i:02d}.txt", "1-1", 1), " ".join(words).encode()))
    config = IngestConfig.from_dict({"dedup": {"max_rounds": 1, "text_threshold": 0.5}})
    tables = _tables(objs, config)
    with pytest.raises(NotConverged):
        run_local(
            tables, IndexParent(DedupIndex.empty(config.dedup), None, config.dedup), config.dedup, 3
        )
    config = IngestConfig.from_dict({"dedup": {"text_threshold": 0.5}})
    kept, dups = _sharded(
        tables, IndexParent(DedupIndex.empty(config.dedup), None, config.dedup), config.dedup, 3
    )
    ref = decide_run(
        [dedup_keys(t) for t in tables], None, DedupIndex.empty(config.dedup), config.dedup
    )
    assert kept == sorted(ref["kept_sources"]) and len(dups) >= 10
