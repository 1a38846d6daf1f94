import json
import sys

from click.testing import CliRunner

from pipelines.cli.ingest import ingest_command, rejects_command


def test_cli_module_does_not_import_beam():
    import subprocess

    code = "import pipelines.cli, sys; print(any(m.startswith('apache_beam') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_ingest_and_rejects_json(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.jsonl").write_text('{"body": "hello"}\n{"body": 3}\n')
    (raw / "b.txt").write_bytes(b"")
    url = "file://" + str(tmp_path / "repo")
    monkeypatch.setenv("DATAVERSION_REPO", url)
    res = CliRunner().invoke(
        ingest_command, [str(raw), "--json", "--text-field", "body", "--", "--direct_num_workers=1"]
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)  # progress lines go to stderr
    assert {"commit", "inputs", "kept", "duplicates", "rejected", "by_modality"} <= set(report)
    assert (report["inputs"], report["kept"], report["rejected"]) == (3, 1, 2)
    res = CliRunner().invoke(rejects_command, ["main", "--json"])
    rows = json.loads(res.output)
    assert [(r["source"], r["reason"]) for r in rows] == [
        ("a.jsonl#L2", "missing_text_field"),
        ("b.txt", "empty_file"),
    ]
    res = CliRunner().invoke(ingest_command, [str(raw), "--repo", url, "--json"])
    assert json.loads(res.stdout)["commit"] is None


def test_missing_repo_is_a_clear_error(tmp_path, monkeypatch):
    from dataversion.errors import BadInputError

    monkeypatch.delenv("DATAVERSION_REPO", raising=False)
    # the command itself turns the error into one line and its exit code...
    res = CliRunner().invoke(ingest_command, [str(tmp_path)])
    assert res.exit_code == 2 and res.stderr.startswith("error: no repository given")
    assert "DATAVERSION_REPO" in res.stderr and "Traceback" not in res.output
    # ...and lets it through with --debug
    res = CliRunner().invoke(ingest_command, [str(tmp_path), "--debug"])
    assert isinstance(res.exception, BadInputError) and "DATAVERSION_REPO" in str(res.exception)
