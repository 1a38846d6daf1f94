"""The branch's dedup state is stored like records: runs of content-addressed parts shared
between commits; +1% onto a branch writes ~1% of the index bytes; runs are compacted;
records the branch no longer holds are not matched."""

import random

import pyarrow as pa
from pipeline_samples import words_doc

from dataversion import Repo
from pipelines.config import IngestConfig
from pipelines.dedup import state as dstate
from pipelines.ingest import run_ingest


def _write(root, docs: dict[str, str]) -> None:
    for rel, text in docs.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def _state(repo: Repo, ref: str) -> dstate.BranchState:
    return dstate.BranchState.from_bytes(repo.read_attachment(repo.resolve(ref), dstate.STATE))


def _sizes(repo: Repo, blobs) -> int:
    return sum(len(repo.read_blob(b)) for b in blobs)


def test_one_percent_more_writes_about_one_percent_of_the_index(tmp_path, vocab):
    rng = random.Random(2)
    raw = tmp_path / "raw"
    base = {f"base/{i:05d}.txt": words_doc(rng, vocab, 60) for i in range(2000)}
    _write(raw, base)
    url = "file://" + str(tmp_path / "repo")
    run_ingest(str(raw), url)
    repo = Repo.open(url)
    before = _state(repo, "main")
    assert len(before.runs) == 1 and before.runs[0]["entries"] == 2000
    more = {f"more/{i:03d}.txt": words_doc(rng, vocab, 60) for i in range(20)}
    more["more/near.txt"] = base["base/00007.txt"].replace(
        base["base/00007.txt"].split()[3], "zz", 1
    )
    _write(raw, more)
    report = run_ingest(str(raw), url)
    assert (report.kept, report.duplicate_kinds) == (20, {"near": 1})
    after = _state(repo, "main")
    new = set(after.blobs()) - set(before.blobs())
    assert set(before.blobs()) <= set(after.blobs())  # shared, not rewritten
    written = _sizes(repo, new) + len(repo.read_attachment(repo.resolve("main"), dstate.STATE))
    total = _sizes(repo, after.blobs())
    assert written / total <= 0.03, (written, total)
    # the workers wrote a fence beside every band part (read by page by the next run)
    for run in after.runs:
        for modality, parts in run["bands"].items():
            assert set(run["band_fences"][modality]) == set(parts)
    # every part is an attachment of the commit, so gc keeps it
    attachments = repo.read_commit(repo.resolve("main")).attachments
    assert all(attachments[dstate.PART_PREFIX + b] == b for b in after.blobs())
    assert repo.gc(grace_seconds=0)["deleted"] >= 0 and repo.verify()["ok"]
    assert _sizes(repo, after.blobs()) == total


def test_runs_are_compacted_and_old_runs_still_match(tmp_path, vocab, monkeypatch):
    monkeypatch.setattr(dstate, "FANOUT", 2)
    rng = random.Random(3)
    raw = tmp_path / "raw"
    url = "file://" + str(tmp_path / "repo")
    first = words_doc(rng, vocab, 80)
    _write(raw, {"r0/first.txt": first})
    run_ingest(str(raw), url)
    for r in range(1, 5):
        _write(raw, {f"r{r}/{i}.txt": words_doc(rng, vocab, 60) for i in range(3)})
        run_ingest(str(raw), url)
    repo = Repo.open(url)
    st = _state(repo, "main")
    assert len(st.runs) <= 3 and any(run["level"] >= 1 for run in st.runs)
    assert st.entries == 13
    for run in st.runs:  # a merged run's band parts are paged too
        for modality, parts in run["bands"].items():
            assert set(run["band_fences"][modality]) == set(parts)
    _write(raw, {"r9/near-first.txt": first.replace(first.split()[5], "qq", 1)})
    report = run_ingest(str(raw), url)
    assert report.duplicate_kinds == {"near": 1}


def test_a_removed_record_is_not_matched(tmp_path, vocab):
    rng = random.Random(4)
    raw = tmp_path / "raw"
    url = "file://" + str(tmp_path / "repo")
    doc = words_doc(rng, vocab, 80)
    _write(raw, {"a.txt": doc, "b.txt": words_doc(rng, vocab, 80)})
    run_ingest(str(raw), url)
    repo = Repo.open(url)
    repo.rm(branch="main", source_prefixes=["a.txt"])
    (raw / "a.txt").unlink()
    _write(raw, {"c.txt": doc.replace(doc.split()[2], "qq", 1)})
    # the rm commit carries no dedup state (rebuilt from its records) and no consumed list:
    # the ingest's is read from the commit before it (only c.txt is new; b.txt stays consumed)
    report = run_ingest(str(raw), url, config=IngestConfig())
    assert (report.objects, report.kept, report.duplicate_kinds) == (1, 1, {})
    assert sorted(r["source"] for r in repo.ls("main")) == ["b.txt", "c.txt"]  # ls is in id order


def test_state_parent_reads_overlapping_parts_and_drops_removed_records(tmp_path):
    """Parts on one grid answer ranges of another grid; ids the branch no longer holds are
    never candidates; hashes come back by id."""
    import numpy as np

    from pipelines.dedup import sharded

    rules = IngestConfig().dedup
    repo = Repo.init("file://" + str(tmp_path / "repo"))
    rng = np.random.default_rng(1)
    ids = np.frombuffer(rng.bytes(16 * 300), "S16").copy()
    sigs = rng.integers(0, 2**32, (300, rules.num_perm), dtype=np.uint64).astype(np.uint32)
    monkey_rows = dstate.PART_ROWS
    dstate.PART_ROWS = 64  # several parts per run
    try:
        run = dstate.write_run(repo, {"text": ids}, {"text": sigs}, rules)
    finally:
        dstate.PART_ROWS = monkey_rows
    assert len(run["bands"]["text"]) > 4 and len(run["hashes"]["text"]) > 1
    st = dstate.BranchState(rules.index_params(), [run])
    removed = set(ids[:10].tolist())
    parent = dstate.StateParent(
        repo, st, lambda x: np.array([i not in removed for i in x.tolist()]), rules
    )
    keys = sharded.band_keys(sigs, "text", rules)
    for parts in (1, 3, 7):
        got = [parent.band_rows("text", k, parts) for k in range(parts)]
        rows = sum(t.num_rows for t in got if t is not None)
        assert rows == keys.size - 10 * keys.shape[1]
        for k, t in enumerate(got):
            if t is not None:
                assert (sharded.key_range(t.column("key").to_numpy(), parts) == k).all()
                assert not set(sharded._ids(t).tolist()) & removed
    h = parent.hashes("text", ids[[5, 200, 17]])
    assert h == [sigs[i].tobytes() for i in (5, 200, 17)]


def _paged_branch(tmp_path, n_records: int = 12_500):
    """A branch state of n_records text records written directly (16 band rows each)."""
    import numpy as np

    rules = IngestConfig().dedup
    repo = Repo.init("file://" + str(tmp_path / "repo"))
    rng = np.random.default_rng(7)
    ids = np.frombuffer(rng.bytes(16 * n_records), "S16").copy()
    sigs = rng.integers(0, 2**32, (n_records, rules.num_perm), dtype=np.uint64).astype(np.uint32)
    run = dstate.write_run(repo, {"text": ids}, {"text": sigs}, rules)
    return repo, rules, dstate.BranchState(rules.index_params(), [run]), rng


def _new_keys(parent_keys, rng, n_new: int, n_hit: int):
    """A run's band keys: n_new fresh keys, n_hit keys the branch has."""
    import numpy as np

    fresh = rng.integers(0, 2**64 - 1, n_new, dtype=np.uint64)
    return np.concatenate([fresh, rng.choice(parent_keys, n_hit, replace=False)])


def _sorted_rows(t):
    return t.sort_by([("key", "ascending"), ("band", "ascending"), ("record_id", "ascending")])


def test_bucket_step_reads_in_proportion_to_its_new_keys(tmp_path):
    """+1% of new band keys onto 200k band rows: the bucket step reads the fences and the
    pages that can hold a new key (well under the band parts' bytes) and returns exactly
    the rows a whole read filtered to the new keys returns."""
    import numpy as np

    from pipelines.dedup import sharded

    repo, rules, st, rng = _paged_branch(tmp_path)
    run = st.runs[0]
    assert len(run["band_fences"]["text"]) == len(run["bands"]["text"]) > 1
    band_bytes = _sizes(repo, run["bands"]["text"].values())
    all_keys = np.concatenate(
        [
            dstate.read_part(repo.read_blob(b)).column("key").to_numpy()
            for b in run["bands"]["text"].values()
        ]
    )
    assert len(all_keys) == 200_000
    store = repo.store
    for frac, bound in ((0.01, 0.10), (0.001, 0.05)):
        n_new = int(len(all_keys) * frac)
        keys = _new_keys(all_keys, rng, n_new - n_new // 20, n_new // 20)
        for parts in (1, 3):
            paged = dstate.StateParent(repo, st, None, rules)
            whole = dstate.StateParent(repo, st, None, rules)
            before = store.stats["GET_BYTES"]
            got = [paged.band_rows("text", k, parts, keys) for k in range(parts)]
            read = store.stats["GET_BYTES"] - before
            assert read <= bound * band_bytes, (frac, parts, read, band_bytes)
            for k, t in enumerate(got):
                full = whole.band_rows("text", k, parts)
                want = full.filter(pa.array(np.isin(full.column("key").to_numpy(), keys)))
                assert t is not None and _sorted_rows(t).equals(_sorted_rows(want))
                assert (sharded.key_range(t.column("key").to_numpy(), parts) == k).all()
            hits = sum(t.num_rows for t in got)
            assert hits == np.isin(all_keys, keys).sum() >= n_new // 20


def test_a_flipped_byte_in_a_page_or_a_fence_is_never_served(tmp_path, monkeypatch):
    import os

    import pytest

    from dataversion.errors import CorruptObjectError
    from dataversion.objectdb import blob_key
    from pipelines.dedup import bandpages

    monkeypatch.setattr(dstate, "PART_ROWS", 8192)  # several parts
    repo, rules, st, rng = _paged_branch(tmp_path, 2_000)
    run = st.runs[0]
    assert len(run["band_fences"]["text"]) > 1
    blob = run["bands"]["text"]["0"]
    fence_id = run["band_fences"]["text"]["0"]
    fence = bandpages.Fence.from_bytes(repo.read_blob(fence_id))
    keys = dstate.read_part(repo.read_blob(blob)).column("key").to_numpy()
    path = os.path.join(repo.store.root, blob_key(blob))
    original = open(path, "rb").read()
    # a byte of the key column, of the band column and of the id column of page 3
    row = 3 * fence.page_rows + 1
    for offset in (
        fence.key_offset + 8 * row + 2,
        fence.band_offset + row,
        fence.id_offset + 16 * row + 5,
    ):
        bad = bytearray(original)
        bad[offset] ^= 0x40
        with open(path, "wb") as f:
            f.write(bytes(bad))
        parent = dstate.StateParent(repo, st, None, rules)
        with pytest.raises(CorruptObjectError):
            parent.band_rows("text", 0, 1, keys[row : row + 1])
    with open(path, "wb") as f:
        f.write(original)
    assert dstate.StateParent(repo, st, None, rules).band_rows("text", 0, 1, keys[row : row + 1])
    # a fence that is not the part's, or whose bytes changed
    other = run["band_fences"]["text"]["1"]
    swapped = {**run, "band_fences": {"text": {**run["band_fences"]["text"], "0": other}}}
    parent = dstate.StateParent(repo, dstate.BranchState(st.params, [swapped]), None, rules)
    with pytest.raises(CorruptObjectError):
        parent.band_rows("text", 0, 1, keys[row : row + 1])
    fpath = os.path.join(repo.store.root, blob_key(fence_id))
    data = bytearray(open(fpath, "rb").read())
    data[len(data) // 2] ^= 1
    with open(fpath, "wb") as f:
        f.write(bytes(data))
    with pytest.raises(CorruptObjectError):
        dstate.StateParent(repo, st, None, rules).band_rows("text", 0, 1, keys[row : row + 1])


def test_parts_without_fences_read_whole_with_the_same_rows(tmp_path):
    """A state written before fences (or a part an erasure rewrote) reads as before."""
    import numpy as np

    repo, rules, st, rng = _paged_branch(tmp_path, 2_000)
    old_run = {k: v for k, v in st.runs[0].items() if k != "band_fences"}
    old = dstate.BranchState(st.params, [old_run])
    assert set(old.blobs()) < set(st.blobs())
    all_keys = np.concatenate(
        [
            dstate.read_part(repo.read_blob(b)).column("key").to_numpy()
            for b in old_run["bands"]["text"].values()
        ]
    )
    keys = _new_keys(all_keys, rng, 200, 50)
    a = dstate.StateParent(repo, old, None, rules).band_rows("text", 0, 2, keys)
    b = dstate.StateParent(repo, st, None, rules).band_rows("text", 0, 2, keys)
    assert _sorted_rows(a).equals(_sorted_rows(b))
    # an erasure's rename drops the fence of a rewritten part, keeps the others
    renamed = dstate.rename_parts(st.to_bytes(), {st.runs[0]["bands"]["text"]["0"]: "f" * 32})
    run = dstate.BranchState.from_bytes(renamed).runs[0]
    assert "0" not in run["band_fences"]["text"] and run["bands"]["text"]["0"] == "f" * 32
    assert set(run["band_fences"]["text"]) == set(st.runs[0]["band_fences"]["text"]) - {"0"}
    fence = repo.read_blob(st.runs[0]["band_fences"]["text"]["0"])
    assert dstate.scrub_part_bytes(fence, np.array([b"x" * 16], "S16")) is None


def test_on_a_remote_store_a_part_costs_a_bounded_number_of_requests(tmp_path, monkeypatch):
    """Each run of pages is a request on S3: at +1% new keys a part's pages come in ~1,000
    runs, so the reader reads through the smallest gaps, at most MAX_RUNS_REMOTE runs per
    phase (keys; band and ids: 16), with the same rows and every page still checked."""
    import numpy as np

    repo, rules, st, rng = _paged_branch(tmp_path)
    run = st.runs[0]
    n_parts = len(run["bands"]["text"])
    all_keys = np.concatenate([dstate.read_part(repo.read_blob(b)).column("key").to_numpy()
                               for b in run["bands"]["text"].values()])
    keys = _new_keys(all_keys, rng, 1_900, 100)
    local = dstate.StateParent(repo, st, None, rules).band_rows("text", 0, 1, keys)
    monkeypatch.setattr(type(repo.store), "local_path", lambda self, key: None)  # reads as S3 would
    before = repo.store.stats["GET"]
    remote = dstate.StateParent(repo, st, None, rules).band_rows("text", 0, 1, keys)
    requests = repo.store.stats["GET"] - before
    assert _sorted_rows(remote).equals(_sorted_rows(local))
    assert requests <= n_parts * (1 + 3 * 16), (requests, n_parts)  # a fence, then <= 16 runs of each


def test_band_rows_sort_like_arrows_three_column_sort():
    """`sort_bands` sorts keys with numpy and only the tied ones by (band, id): the order
    (and so the part bytes) equals Arrow's sort by (key, band, record_id), ties included."""
    import numpy as np
    import pyarrow as pa

    from pipelines.dedup import sharded
    from pipelines.dedup import state as dstate

    rng = np.random.default_rng(5)
    n = 5000
    keys = rng.integers(0, 2**64 - 1, n, dtype=np.uint64)
    keys[rng.integers(0, n, 1500)] = keys[rng.integers(0, n, 1500)]  # buckets
    keys[:40] = 7  # a long run
    band = rng.integers(0, 3, n).astype(np.uint8)
    ids = np.frombuffer(rng.bytes(16 * n), "S16").copy()
    ids[100:140] = ids[0]  # equal ids under equal keys and bands
    keys[100:140], band[100:140] = keys[0], band[0]
    t = pa.Table.from_arrays(
        [pa.array(band), pa.array(keys), sharded._id_col(ids)], names=["band", "key", "record_id"]
    )
    want = t.sort_by([("key", "ascending"), ("band", "ascending"), ("record_id", "ascending")])
    for perm in (np.arange(n), rng.permutation(n)):
        got = dstate.sort_bands(t.take(pa.array(perm)))
        assert got.equals(want)
    assert dstate.sort_bands(t.slice(0, 1)).equals(t.slice(0, 1))
    assert dstate.sort_bands(t.slice(0, 0)).num_rows == 0
