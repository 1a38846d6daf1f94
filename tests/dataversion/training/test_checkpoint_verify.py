"""Checkpoints verified on load: every single-bit flip of a saved checkpoint is refused with
BadInputError or loads exactly what was saved; malformed loader states are refused by field;
a file replaced after its save fails against its lineage entry's sha256 (load and inspect)."""

from __future__ import annotations

import io
import json
import warnings

import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from dataversion import Repo  # noqa: E402
from dataversion.cli.lineage import inspect_command  # noqa: E402
from dataversion.errors import BadInputError  # noqa: E402
from dataversion.records import make_text_records  # noqa: E402
from dataversion.torch import SnapshotDataset, SnapshotLoader, load_checkpoint, save_checkpoint  # noqa: E402
from dataversion.training.checkpoint import check_lineage_sha256, parse_checkpoint  # noqa: E402
from dataversion.training.state import state_checksum, validate_loader_state  # noqa: E402


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> str:
    u = "file://" + str(tmp_path_factory.mktemp("ckverify") / "repo")
    Repo.init(u).commit(make_text_records([f"verify {i}" for i in range(100)]), branch="main", message="one",
                        target_shard_bytes=2 * 1024)
    return u


def _saved(url, tmp_path, *, record: bool) -> tuple[str, bytes, dict]:
    ld = SnapshotLoader(url, batch_size=8, window=32, seed=7, columns=["text"])
    it = iter(ld)
    next(it)
    next(it)
    path = str(tmp_path / "c.pt")
    save_checkpoint(path, loader=ld, run="bits", step=2, record=record, model={"w": torch.arange(6, dtype=torch.float32)},
                    trainer={"step": 2})
    with open(path, "rb") as f:
        raw = f.read()
    return path, raw, ld.state_dict()


def _flips(raw: bytes):
    for bit in range(len(raw) * 8):
        b = bytearray(raw)
        b[bit // 8] ^= 1 << (bit % 8)
        yield bit, bytes(b)


def _check_all_flips(url, tmp_path, *, record: bool) -> tuple[int, int]:
    path, raw, state = _saved(url, tmp_path, record=record)
    ds = SnapshotDataset(url, batch_size=8, window=32, columns=["text"])
    repo = ds.open_repo()
    refused = accepted = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about odd pickle protocols in damaged files
        for bit, data in _flips(raw):
            # load_checkpoint minus the file read (the same calls, in its order)
            try:
                ck = parse_checkpoint(data, path)
                meta = ck.pop("dataversion")
                check_lineage_sha256(repo, meta, data, path)
                ds.load_state_dict(meta["loader"])
            except BadInputError as e:
                assert str(e).count("\n") == 0 and path in str(e), (bit, str(e))
                refused += 1
                continue
            accepted += 1  # nothing the checkpoint says may have changed
            assert ds.state_dict() == state, bit
            assert set(ck) == {"model", "trainer"} and ck["trainer"] == {"step": 2}, bit
            assert torch.equal(ck["model"]["w"], torch.arange(6, dtype=torch.float32)), bit
            assert (meta["run"], meta["step"]) == ("bits", 2), bit
    return refused, accepted


def test_every_bit_flip_is_refused_against_the_lineage_entry(url, tmp_path):
    refused, accepted = _check_all_flips(url, tmp_path, record=True)
    assert accepted == 0 and refused > 10_000


def test_every_bit_flip_without_lineage_is_refused_or_harmless(url, tmp_path):
    """No entry to compare with: the archive CRCs and the metadata checksum still hold; the
    only flips accepted lie in bytes no reader uses (zip padding, unused header fields)."""
    refused, accepted = _check_all_flips(url, tmp_path, record=False)
    assert refused > 0 and refused + accepted > 10_000


def test_load_checkpoint_refuses_a_flipped_file_in_one_line(url, tmp_path):
    path, raw, _ = _saved(url, tmp_path, record=False)
    start = raw.index(b"data.pkl")  # the pickled metadata follows its name
    b = bytearray(raw)
    b[start + 120] ^= 0x04
    with open(path, "wb") as f:
        f.write(bytes(b))
    ld = SnapshotLoader(url, batch_size=8, window=32, columns=["text"])
    with pytest.raises(BadInputError) as e:
        load_checkpoint(path, loader=ld)
    assert "damaged" in str(e.value) and ld.position == 0


def _good_state(url) -> dict:
    return SnapshotDataset(url, batch_size=8, window=32).state_dict()


@pytest.mark.parametrize("change,field", [
    ({"position": "8"}, "position"), ({"position": -1}, "position"), ({"position": 101}, "position"),
    ({"position": True}, "position"), ({"epoch": -1}, "epoch"), ({"epoch": 1.0}, "epoch"), ({"seed": None}, "seed"),
    ({"seed": 1 << 70}, "seed"), ({"window": 0}, "window"), ({"window": (1 << 24) + 1}, "window"),
    ({"world_size": 0}, "world_size"), ({"batch_size": 0}, "batch_size"), ({"shuffle": 1}, "shuffle"),
    ({"remainder": "keep"}, "remainder"), ({"commit": "not-hex"}, "commit"), ({"commit": 5}, "commit"),
    ({"format": 2}, "format"), ({"num_records": None}, "num_records"), ({"repo": 3}, "repo"),
    ({"extra": [1, 2]}, "extra"),
])
def test_malformed_states_are_refused_by_field(url, tmp_path, change, field):
    state = {**_good_state(url), **change}
    ds = SnapshotDataset(url, batch_size=8, window=32)
    with pytest.raises(BadInputError) as e:
        ds.load_state_dict(state)
    assert field in str(e.value) and ds.position == 0
    # the same state in a checkpoint whose checksum was recomputed to match (a buggy writer)
    meta = {"loader": state, "run": None, "step": None, "saved_at": "2026-01-01T00:00:00Z", "lineage_id": None}
    meta["checksum"] = state_checksum(meta)
    path = str(tmp_path / "m.pt")
    torch.save({"dataversion": meta}, path)
    with pytest.raises(BadInputError) as e:
        load_checkpoint(path, loader=ds)
    assert field in str(e.value) and path in str(e.value)


@pytest.mark.parametrize("state", [None, [], "x", {"commit": "ab" * 16}, {"position": 0}, {1: 2, "commit": "a", "position": 0}])
def test_not_a_state_at_all(state):
    with pytest.raises(BadInputError):
        validate_loader_state(state)


def test_replaced_file_fails_against_its_lineage_entry(url, tmp_path):
    path, raw, _ = _saved(url, tmp_path, record=True)
    # a valid checkpoint with the same metadata (checksum included) but other weights
    ck = torch.load(io.BytesIO(raw), weights_only=True)
    ck["model"]["w"] = torch.zeros(6)
    torch.save(ck, path)
    parse_checkpoint(open(path, "rb").read(), path)  # self-consistent on its own
    ld = SnapshotLoader(url, batch_size=8, window=32, columns=["text"])
    with pytest.raises(BadInputError) as e:
        load_checkpoint(path, loader=ld)
    assert "lineage entry" in str(e.value) and ld.position == 0
    r = CliRunner().invoke(inspect_command, [path, "--json"])
    assert r.exit_code == 2 and "lineage entry" in r.output and "Traceback" not in r.output
    load_checkpoint(path)  # without a loader there is no repository to compare with: states only


def test_inspect_refuses_a_damaged_checkpoint(url, tmp_path):
    path, raw, _ = _saved(url, tmp_path, record=True)
    r = CliRunner().invoke(inspect_command, [path, "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["lineage_id"]
    b = bytearray(raw)
    b[len(raw) // 3] ^= 0x10
    with open(path, "wb") as f:
        f.write(bytes(b))
    r = CliRunner().invoke(inspect_command, [path])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "Traceback" not in r.output, r.output


def test_a_corrupt_lineage_entry_warns_and_does_not_block_the_load(tmp_path):
    url = "file://" + str(tmp_path / "own")
    Repo.init(url).commit(make_text_records([f"own {i}" for i in range(40)]), branch="main", message="own")
    path, raw, state = _saved(url, tmp_path, record=True)
    meta = torch.load(io.BytesIO(raw), weights_only=True)["dataversion"]
    repo = Repo.open(url)
    key = f"lineage/bits/{meta['lineage_id']}.json"
    repo.store.put(key, b"{not json")
    ld = SnapshotLoader(url, batch_size=8, window=32, columns=["text"])
    with pytest.warns(RuntimeWarning, match="could not compare"):
        load_checkpoint(path, loader=ld)
    assert ld.state_dict() == state
