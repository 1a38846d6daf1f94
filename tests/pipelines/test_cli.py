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


def test_ingest_report_writes_the_new_commit_s_report_against_its_parent(tmp_path, vocab):
    import random
    from html.parser import HTMLParser

    from pipeline_samples import png_bytes, words_doc

    rng = random.Random(3)
    doc = words_doc(rng, vocab, 120)
    raw = tmp_path / "raw"
    (raw / "docs").mkdir(parents=True)
    (raw / "cats").mkdir()
    (raw / "docs" / "a.txt").write_text(doc)
    (raw / "docs" / "near.txt").write_text(doc.replace(doc.split()[7], "different", 1))
    (raw / "docs" / "empty.txt").write_bytes(b"")
    (raw / "cats" / "1.png").write_bytes(png_bytes(64, 64, seed=1))
    url = "file://" + str(tmp_path / "repo")
    out = tmp_path / "report.html"
    args = ["--repo", url, "--report", str(out), "--", "--direct_num_workers=1"]
    res = CliRunner().invoke(ingest_command, [str(raw / "docs"), *args])
    assert res.exit_code == 0, res.output
    assert f"report: {out}" in res.output

    class Sections(HTMLParser):
        found: dict = {}

        def handle_starttag(self, tag, attrs):
            if tag == "section":
                a = dict(attrs)
                self.found[a["id"]] = a

    def sections():
        p = Sections()
        p.found = {}
        p.feed(out.read_text())
        return p.found

    s = sections()
    assert s["rejects"]["data-count"] == "1" and s["clusters"]["data-duplicates"] == "1"
    assert int(s["features"]["data-count"]) > 0  # the run wrote the commit's features table
    assert "<mark>different</mark>" in out.read_text()  # the duplicate read back from the source
    assert "against" not in s  # a first commit has no parent
    res = CliRunner().invoke(ingest_command, [str(raw / "cats"), *args[:-2], "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["report_file"] == str(out)  # progress lines go to stderr
    s = sections()
    assert s["against"]["data-added"] == "1" and s["overview"]["data-records"] == "2"
    out.unlink()
    res = CliRunner().invoke(ingest_command, [str(raw / "cats"), *args[:-2]])
    assert res.exit_code == 0 and "no report written" in res.output and not out.exists()
