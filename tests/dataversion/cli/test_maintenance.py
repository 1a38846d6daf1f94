"""`dataversion verify | gc`."""

from __future__ import annotations

import json


def test_verify_fails_with_nonzero_exit_on_corruption(cli, tmp_path):
    shards = json.loads(cli("ls", "--shards", "--json").stdout)
    path = tmp_path / "repo" / shards[0]["key"]
    path.write_bytes(path.read_bytes()[:-10])
    out = cli("verify", "--all", code=5)
    assert "BAD shards/" in out.stdout and "FAILED" in out.stdout


def test_gc_dry_run_json(cli):
    d = json.loads(cli("gc", "--dry-run", "--grace", "0", "--json").stdout)
    assert d["deleted"] == 0 and {"bytes", "kept_young"} <= set(d)


def test_verify_loads_no_thread_starting_extras_and_exits_cleanly(tmp_path):
    """`verify` once ended with `terminate called without an active exception` (rc 134): a
    native thread pool of an optional dependency loaded by the CLI outlived interpreter
    shutdown. verify now loads none of them, and exits 0 run after run."""
    import subprocess
    import sys

    from dataversion import Repo
    from dataversion.records import make_text_records

    url = f"file://{tmp_path}/r"
    repo = Repo.init(url)
    for i in range(3):
        repo.commit(make_text_records([f"doc {i} {j}" for j in range(50)]), message=str(i))
    code = (
        "import sys\nfrom dataversion.cli import main\n"
        f"try:\n    main(['verify', '--all', '--repo', {url!r}], standalone_mode=False)\nexcept SystemExit as e:\n    assert not e.code\n"
        "import threading\nprint([t.name for t in threading.enumerate()])\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'grpc', 'feast', 'apache_beam', 'torch', 'dask'}))"
    )
    for _ in range(3):
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip().splitlines()[-1] == "[]"
        # no thread left to die at interpreter shutdown (tqdm's monitor thread once was)
        assert p.stdout.strip().splitlines()[-2] == "['MainThread']"
