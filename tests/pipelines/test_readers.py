import json

from pipelines.config import IngestConfig
from pipelines.process import WorkItem, process_objects
from pipelines.readers import LabelResolver, open_source


def _write(root, rel, data):
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data if isinstance(data, bytes) else data.encode())


def test_listing_is_sorted_with_change_tokens_and_marks_hidden(tmp_path):
    _write(tmp_path, "b.txt", "b")
    _write(tmp_path, "a/c.txt", "c")
    _write(tmp_path, ".hidden", "x")
    _write(tmp_path, ".git/config", "x")
    src = open_source(str(tmp_path))
    objs = src.list()
    # hidden entries are listed (counted) as rejects, a hidden directory as one unit
    assert [(o.key, o.problem and o.problem[0]) for o in objs] == [
        (".git", "hidden_file"),
        (".hidden", "hidden_file"),
        ("a/c.txt", None),
        ("b.txt", None),
    ]
    assert objs[2].etag.startswith("1-") and src.read("a/c.txt") == b"c"
    assert [o.key for o in src.list(include_hidden=True)] == [
        ".git/config",
        ".hidden",
        "a/c.txt",
        "b.txt",
    ]


def test_labels_from_sidecars_folders_and_map(tmp_path):
    _write(tmp_path, "cats/001.png", "x")
    _write(tmp_path, "cats/002.png", "x")
    _write(tmp_path, "cats/labels.csv", "filename,label\n002.png,Kitten\n")
    _write(tmp_path, "dogs/a.png", "x")
    _write(tmp_path, "dogs/a.json", json.dumps({"label": "puppy"}))
    _write(tmp_path, "top.txt", "x")
    _write(tmp_path, "notes.json", "{}")  # not a sidecar: no notes.* beside it
    src = open_source(str(tmp_path))
    r = LabelResolver(
        src.list(),
        src.read,
        folder_labels=True,
        label_map={"Kitten": "cat", "cats": "cat"},
        lowercase=False,
    )
    assert r.sidecars == {"cats/labels.csv", "dogs/a.json"}
    assert r.label_of("cats/001.png") == "cat"  # folder, mapped
    assert r.label_of("cats/002.png") == "cat"  # labels.csv, mapped
    assert r.label_of("dogs/a.png") == "puppy"  # json sidecar
    assert r.label_of("top.txt") is None
    r2 = LabelResolver(src.list(), src.read, folder_labels=False, label_map={}, lowercase=True)
    assert r2.label_of("cats/001.png") is None and r2.label_of("cats/002.png") == "kitten"


def test_jsonl_field_label_field_and_metadata():
    cfg = IngestConfig(text_field="body", label_map={"POS": "positive"})
    data = b'{"body": "hello there", "label": "POS", "lang": "en"}\n{"text": "no body"}\n'
    out = process_objects([(WorkItem("d.jsonl", "e", len(data), "folder"), data)], cfg)
    row = out.candidates.to_pylist()[0]
    assert (row["text"], row["label"], row["meta"], row["source"]) == (
        "hello there",
        "positive",
        '{"lang":"en"}',
        "d.jsonl#L1",
    )
    assert out.rejects == [
        {
            "source": "d.jsonl#L2",
            "reason": "missing_text_field",
            "message": "line has no string field 'body'",
        }
    ]


def test_s3_source_lists_through_one_store_with_etags_and_pickles_without_it(s3_env):
    import io
    import pickle

    client = s3_env.client()
    bucket = s3_env.new_bucket()
    for key, data in {
        "raw/b.txt": b"bb",
        "raw/a/c.txt": b"c",
        "raw/.hidden/x": b"x",
        "rawx/d.txt": b"d",
    }.items():
        client.put_object(bucket, key, io.BytesIO(data), len(data))
    src = open_source(f"s3://{bucket}/raw/")
    listed = src.list()
    assert [(o.key, o.problem and o.problem[0]) for o in listed][0] == (".hidden/x", "hidden_file")
    objs = [o for o in listed if o.problem is None]
    assert [(o.key, o.size) for o in objs] == [("a/c.txt", 1), ("b.txt", 2)]
    etags = {o.key: client.stat_object(bucket, f"raw/{o.key}").etag.strip('"') for o in objs}
    assert all(o.etag and o.etag == etags[o.key] for o in objs)  # the incremental-run token
    store = src._store
    assert src.read("b.txt") == b"bb" and src.read("a/c.txt") == b"c"
    assert src._store is store and store.stats["GET"] == 2  # one store, reused
    copy = pickle.loads(pickle.dumps(src))  # as Beam ships it to a worker
    assert copy == src and copy._store is None and src._store is store
    assert copy.read("b.txt") == b"bb"


def test_local_source_pickles_and_reads(tmp_path):
    import pickle

    _write(tmp_path, "a.txt", "x")
    src = open_source(str(tmp_path))
    assert pickle.loads(pickle.dumps(src)).read("a.txt") == b"x"
