"""`dv://`: one commit read through pandas, pyarrow.dataset, DuckDB, Polars and Hugging Face
datasets equals `dataversion ls`; files/ equals `checkout`; bytes are verified; refs resolve once."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import dataversion.interop.fsspec as dvfs
from dataversion import Repo
from dataversion.errors import CorruptObjectError
from dataversion.shards import shard_key

from .conftest import ls_records, record_rows


def dv(repo_url: str) -> dvfs.DataversionFileSystem:
    return fsspec.filesystem("dv", repo=repo_url, skip_instance_cache=True)


def _pandas(url, ref):
    pd = pytest.importorskip("pandas")
    return pa.Table.from_pandas(pd.read_parquet(f"dv://{ref}/", storage_options={"repo": url}), preserve_index=False)


def _pyarrow_dataset(url, ref):
    return ds.dataset(ref, filesystem=dv(url), format="parquet").to_table()


def _duckdb(url, ref):
    duckdb = pytest.importorskip("duckdb", reason="duckdb is not installed (bench/dev extra)")
    con = duckdb.connect()
    con.register_filesystem(dv(url))
    assert con.sql(f"SELECT count(*) FROM 'dv://{ref}/*.parquet'").fetchall()[0][0] > 0
    return con.sql(f"SELECT * FROM read_parquet('dv://{ref}/*.parquet')").to_arrow_table()


def _polars(url, ref):
    pl = pytest.importorskip("polars", reason="polars is not installed (bench/dev extra)")
    fs = dv(url)
    lazy = pl.scan_pyarrow_dataset(ds.dataset(ref, filesystem=fs)).collect().to_arrow()
    eager = pl.read_parquet([fs.open(p) for p in fs.glob(f"{ref}/*.parquet")]).to_arrow()
    assert lazy.num_rows == eager.num_rows
    return lazy


def _hf_datasets(url, ref, tmp_path):
    datasets = pytest.importorskip("datasets", reason="Hugging Face datasets is not installed (bench extra)")
    d = datasets.load_dataset("parquet", data_files=f"dv://{ref}/*.parquet", storage_options={"repo": url},
                              split="train", cache_dir=str(tmp_path / "hf-cache"))
    return d.data.table


@pytest.mark.parametrize("reader", ["pandas", "pyarrow_dataset", "duckdb", "polars", "hf_datasets"])
def test_every_reader_sees_exactly_what_ls_lists(sample_repo, reader, tmp_path):
    expected = ls_records(sample_repo)
    assert len(expected) == 14  # 6 + 1 texts, 4 lines, image, audio, t0 edited, new, minus one removed
    fn = globals()[f"_{reader}"]
    table = fn(sample_repo, "main", tmp_path) if reader == "hf_datasets" else fn(sample_repo, "main")
    assert table.num_rows == len(expected)
    assert set(table.column_names) >= {"record_id", "modality", "source", "label", "meta", "text", "data"}
    assert record_rows(table) == expected


def test_shards_without_deletions_are_their_own_bytes_others_are_rewritten(sample_repo):
    repo = Repo.open(sample_repo)
    fs = dv(sample_repo)
    names = fs.ls("main", detail=False)
    assert names == sorted(names) and all(n.endswith(".parquet") for n in names) and len(names) == 2
    from dataversion.interop.snapshot import SnapshotView

    parts = SnapshotView(repo, repo.resolve("main")).parts
    infos = {s.id: s for s in repo.shard_table(repo.read_packing(repo.resolve("main")))}
    served = [fs.cat(n) for n in names]
    for part, data, name in zip(parts, served, names):
        assert fs.info(name)["size"] == len(data)
        stored = repo.read_shard_bytes(part.group.shard)
        if part.zero_copy:
            assert data == stored  # zero copy: the stored shard itself
        else:
            assert data != stored
            assert pq.read_table(pa.BufferReader(data)).num_rows == part.rows < infos[part.group.shard].rows
    assert [p.zero_copy for p in parts].count(False) == 1
    removed = {r["record_id"] for r in ls_records(sample_repo, "main~1")} - {r["record_id"] for r in ls_records(sample_repo)}
    assert len(removed) == 1
    served_ids = {r["record_id"] for n in names for r in record_rows(ds.dataset([n], filesystem=fs).to_table())}
    assert not removed & served_ids


def test_files_are_what_checkout_writes(sample_repo, tmp_path):
    repo = Repo.open(sample_repo)
    out = tmp_path / "co"
    d = repo.checkout("main", str(out))
    assert d["renamed"], "the sample has two records sharing texts/t0.txt"
    written = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    fs = dv(sample_repo)
    served = {p[len("main/files/"):]: fs.cat(p) for p in fs.find("main/files")}
    assert served == written
    assert fs.isdir("main/files/texts") and fs.isfile("main/files/texts/sub/nested.txt")
    assert "main/files" not in fs.ls("main", detail=False)  # a directory read of dv://main/ is Parquet only
    with fs.open("main/files/lines.jsonl") as f:
        assert f.read() == written["lines.jsonl"]


def test_a_ref_resolves_once_and_commit_paths_are_immutable(sample_repo, tmp_path):
    repo = Repo.open(sample_repo)
    before = repo.resolve("main")
    fs = dv(sample_repo)
    rows_before = ds.dataset("main", filesystem=fs).count_rows()
    key = fs.ukey(f"{before}/{fs.ls(before, detail=False)[0].split('/', 1)[1]}")
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "x.txt").write_text("one more record")
    repo.add([str(tmp_path / "more")])
    assert ds.dataset("main", filesystem=fs).count_rows() == rows_before  # same instance: same commit
    assert ds.dataset("main", filesystem=dv(sample_repo)).count_rows() == rows_before + 1
    assert ds.dataset(before, filesystem=dv(sample_repo)).count_rows() == rows_before
    assert ds.dataset(before[:10], filesystem=dv(sample_repo)).count_rows() == rows_before
    assert dv(sample_repo).ukey(f"{before}/{fs.ls(before, detail=False)[0].split('/', 1)[1]}") == key


def test_fsspec_caching_layers_work_on_commit_paths(sample_repo, tmp_path):
    repo = Repo.open(sample_repo)
    commit = repo.resolve("main")
    name = dv(sample_repo).ls(commit, detail=False)[0]
    cache = tmp_path / "cache"
    with fsspec.open(f"filecache::dv://{name}", dv={"repo": sample_repo, "skip_instance_cache": True},
                     filecache={"cache_storage": str(cache)}) as f:
        first = f.read()
    assert first == dv(sample_repo).cat(name)
    assert any(p.is_file() and p.stat().st_size == len(first) for p in cache.rglob("*"))


def test_corrupt_shard_is_refused_whatever_the_reader(tmp_path, monkeypatch):
    from .conftest import write_sample_tree

    url = f"file://{tmp_path}/repo"
    write_sample_tree(tmp_path / "raw")
    repo = Repo.init(url)
    repo.add([str(tmp_path / "raw")])
    shard = repo.shard_table(repo.read_packing(repo.resolve("main")))[0]
    path = Path(repo.store.local_path(shard_key(shard.id)))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))
    fs = dv(url)
    with pytest.raises(CorruptObjectError, match="corrupt"):
        fs.cat(fs.ls("main", detail=False)[0])
    with pytest.raises(Exception, match="corrupt"):
        ds.dataset("main", filesystem=dv(url)).to_table()
    with pytest.raises(CorruptObjectError):
        dv(url).cat("main/files/lines.jsonl")


def test_read_only_and_missing_paths(sample_repo):
    fs = dv(sample_repo)
    with pytest.raises(PermissionError):
        fs.open("main/x.parquet", "wb")
    with pytest.raises(PermissionError):
        fs.rm("main/files/lines.jsonl")
    with pytest.raises(FileNotFoundError):
        fs.info("no-such-branch/")
    with pytest.raises(FileNotFoundError):
        fs.cat("main/files/no/such/file.txt")
    with pytest.raises(FileNotFoundError):
        fs.cat("main/part-99999-x.parquet")
    assert "main" in fs.ls("", detail=False)


def test_repository_from_the_environment(sample_repo, monkeypatch):
    monkeypatch.setenv("DATAVERSION_REPO", sample_repo)
    fs = fsspec.filesystem("dv", skip_instance_cache=True)
    assert ds.dataset("main", filesystem=fs).count_rows() == len(ls_records(sample_repo))
    monkeypatch.delenv("DATAVERSION_REPO")
    with pytest.raises(ValueError, match="DATAVERSION_REPO"):
        fsspec.filesystem("dv", skip_instance_cache=True)


def test_protocol_found_through_the_entry_point_without_importing_us(sample_repo, tmp_path):
    """A program that never imports dataversion opens dv:// through fsspec's entry points.
    Where the installed metadata predates the entry point, the declaration in pyproject.toml
    is installed as a stand-in distribution on the child's path."""
    tomllib = pytest.importorskip("tomllib", reason="Python < 3.11")

    root = Path(__file__).resolve().parents[3]
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["entry-points"]["fsspec.specs"]
    assert declared == {"dv": "dataversion.interop.fsspec:DataversionFileSystem"}
    path = [str(root)]
    if "dv" not in {e.name for e in importlib.metadata.entry_points(group="fsspec.specs")}:
        dist = tmp_path / "site" / "dv_entry_point-0.0.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dv-entry-point\nVersion: 0.0\n")
        (dist / "entry_points.txt").write_text(f"[fsspec.specs]\ndv = {declared['dv']}\n")
        path.insert(0, str(tmp_path / "site"))
    code = ("import fsspec, sys; assert 'dataversion' not in sys.modules; "
            "fs = fsspec.filesystem('dv', repo=sys.argv[1]); print(len(fs.glob('main/*.parquet')))")
    out = subprocess.run([sys.executable, "-c", code, sample_repo], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(path)})
    assert out.stdout.strip() == "2"


def test_a_pickled_filesystem_serves_the_commit_its_parent_resolved(sample_repo, tmp_path):
    import pickle

    fs = dv(sample_repo)
    rows = ds.dataset("main", filesystem=fs).count_rows()
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "y.txt").write_text("moved the branch")
    Repo.open(sample_repo).add([str(tmp_path / "more")])
    copy = pickle.loads(pickle.dumps(fs))
    assert copy is not fs and copy.resolve("main") == fs.resolve("main")
    assert ds.dataset("main", filesystem=copy).count_rows() == rows


def test_hf_datasets_cache_follows_the_commit_not_the_ref_name(sample_repo, tmp_path):
    datasets = pytest.importorskip("datasets", reason="Hugging Face datasets is not installed (bench extra)")

    def load():
        return datasets.load_dataset("parquet", data_files="dv://main/*.parquet", split="train",
                                     storage_options={"repo": sample_repo, "skip_instance_cache": True},
                                     cache_dir=str(tmp_path / "hf")).num_rows

    before = load()
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "z.txt").write_text("one more for the cache")
    Repo.open(sample_repo).add([str(tmp_path / "more")])
    assert load() == before + 1


def test_pyarrow_dataset_reads_more_shards_than_arrow_has_threads(tmp_path):
    # Before: the shard check inside open waited on Arrow's CPU pool, which the dataset scan
    # holds: with more shards than pool threads the read never returned.
    script = (
        "import sys, fsspec, pyarrow as pa, pyarrow.dataset as ds\n"
        "import dataversion.interop.fsspec\n"
        "from dataversion import Repo\n"
        "from dataversion.records import make_text_records\n"
        "repo = Repo.init(sys.argv[1])\n"
        "for k in range(3):\n"
        "    repo.commit(make_text_records([f'text {k} {i}' for i in range(3)]), message=str(k))\n"
        "pa.set_cpu_count(1)\n"
        "fs = fsspec.filesystem('dv', repo=sys.argv[1], skip_instance_cache=True)\n"
        "print(ds.dataset('main', filesystem=fs, format='parquet').to_table().num_rows)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, f"file://{tmp_path}/repo"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip().splitlines()[-1] == "9", out.stderr
