"""Shard encoding (`shards.ShardEncoding`): the writer's per-column codecs, and readers that need
no knowledge of them (a snapshot may mix shards of several encodings)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from dataversion import Repo, shards
from dataversion.records import make_binary_records, make_text_records
from dataversion.shards import BEFORE_ENCODING, SHARD_ENCODING, parquet_bytes, shard_key


def column_codecs(data: bytes) -> dict[str, str]:
    md = pq.ParquetFile(pa.BufferReader(data)).metadata
    rg = md.row_group(0)
    return {rg.column(i).path_in_schema: rg.column(i).compression for i in range(md.num_columns)}


def test_the_writer_encodes_columns_as_shard_encoding_says(tmp_path):
    repo = Repo.init(f"file://{tmp_path}/repo")
    table = pa.concat_tables([
        make_text_records([f"text number {i} " * 20 for i in range(50)], sources=[f"t/{i}.txt" for i in range(50)]),
        make_binary_records([bytes([i]) * 500 for i in range(5)], ["image"] * 5),
    ])
    res = repo.commit(table, message="mixed")
    (shard,) = repo.shard_table(repo.read_packing(res.commit_id))
    codecs = column_codecs((tmp_path / "repo" / shard_key(shard.id)).read_bytes())
    want = {"text": SHARD_ENCODING.text_codec, "data": SHARD_ENCODING.data_codec, "source": SHARD_ENCODING.metadata_codec}
    assert {k: codecs[k] for k in want} == {k: v.upper().replace("NONE", "UNCOMPRESSED") for k, v in want.items()}
    assert codecs["text"] == "ZSTD"  # chosen by benchmarks/bench_encoding.py; snappy before


def test_encoding_options_round_trip_and_the_default_is_deterministic():
    table = make_text_records([f"doc {i} " + "lorem ipsum " * 40 for i in range(5000)])
    table = shards.sort_by_id(table)
    for enc in (BEFORE_ENCODING, SHARD_ENCODING, shards.ShardEncoding(text_codec="none", row_group_rows=1000)):
        data = parquet_bytes(table, enc)
        assert pq.read_table(pa.BufferReader(data)).equals(table)
        assert pq.ParquetFile(pa.BufferReader(data)).metadata.num_row_groups == -(-5000 // enc.row_group_rows)
    assert bytes(parquet_bytes(table)) == bytes(parquet_bytes(table))  # same records, same shard name
    assert len(parquet_bytes(table)) < len(parquet_bytes(table, BEFORE_ENCODING))


def test_readers_serve_a_snapshot_mixing_old_and_new_encodings(tmp_path, monkeypatch):
    """Shards written before the encoding changed (snappy) and after it sit in one snapshot:
    ls, the loader's block reads, checkout and verify read both without being told."""
    from dataversion.training.blocks import block_sizes, read_block

    repo = Repo.init(f"file://{tmp_path}/repo")
    monkeypatch.setattr(shards, "SHARD_ENCODING", BEFORE_ENCODING)
    old = [f"old record {i}" for i in range(30)]
    repo.commit(make_text_records(old), message="old encoding")
    monkeypatch.setattr(shards, "SHARD_ENCODING", SHARD_ENCODING)
    new = [f"new record {i}" for i in range(30)]
    res = repo.commit(make_text_records(new), message="new encoding")
    infos = repo.shard_table(repo.read_packing(res.commit_id))
    kinds = {column_codecs((tmp_path / "repo" / shard_key(s.id)).read_bytes())["text"] for s in infos}
    assert kinds == {"SNAPPY", SHARD_ENCODING.text_codec.upper()}
    assert len(list(repo.ls("main"))) == 60
    sizes = block_sizes(repo, res.commit_id)
    texts = read_block(repo, res.commit_id, 0, sum(sizes), ["text"]).column("text").to_pylist()
    assert sorted(texts) == sorted(old + new)
    repo.checkout("main", str(tmp_path / "out"))
    assert len(list((tmp_path / "out").rglob("*"))) >= 60
    assert repo.verify()["ok"]
