"""`dataversion report`: one static page with every section, nothing remote, user content escaped."""

from __future__ import annotations

import json

from click.testing import CliRunner

from dataversion.cli import main
from dataversion.report import collect, render, write_report

from .conftest import HOSTILE, build, parse


def test_report_shows_every_section_with_the_commit_s_numbers(report_repo, tmp_path):
    out = tmp_path / "r.html"
    d = write_report(report_repo.repo, "main", str(out), against="main~1", read_sources=True)
    html = out.read_text()
    page = parse(html)
    sections = {a["id"]: a for a in page.all("section")}
    assert set(sections) == {"overview", "history", "rejects", "clusters", "labels", "sizes", "features", "against"}
    assert sections["overview"]["data-records"] == "11" == str(d["records"])
    assert sections["history"]["data-commits"] == "2"
    assert page.count_class("column") == 2  # one stacked column per commit
    assert sections["rejects"]["data-count"] == "3" and page.count_class("reject") == 3
    assert sections["clusters"]["data-count"] == "3" and sections["clusters"]["data-duplicates"] == "4"
    assert page.count_class("cluster") == 3 and page.count_class("dup") == 4
    assert "<mark>changed</mark>" in html and "<mark>word5</mark>" in html  # both sides marked
    thumbs = page.all("img")
    assert len(thumbs) == 2 and all(a["src"].startswith("data:image/png;base64,") for a in thumbs)
    assert "0.50 s" in html and "0.75 s" in html  # kept audio (metadata) and the duplicate (decoded)
    assert sections["labels"]["data-distinct"] == "4"  # news, blog, cats, sounds
    assert sections["against"]["data-added"] == "8" and sections["against"]["data-removed"] == "1"
    assert sections["features"]["data-count"] == "0"  # no features table for these commits
    assert page.count_class("change") == 9  # 8 added + 1 removed examples


def test_page_is_self_contained(report_repo, tmp_path):
    html = render(collect(report_repo.repo, "main", against="main~1", read_sources=True))
    page = parse(html)
    assert not page.all("script") and not page.all("link") and not page.all("iframe")
    for tag, attrs in page.tags:
        for k in ("src", "href", "xlink:href", "action"):
            if k in attrs:
                assert attrs[k].startswith("data:"), (tag, attrs)
    csp = page.all("meta", **{"http-equiv": "Content-Security-Policy"})
    assert csp and "default-src 'none'" in csp[0]["content"]
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html


def test_hostile_names_labels_texts_and_messages_are_shown_not_run(tmp_path):
    r = build(tmp_path, hostile=True)
    html = render(collect(r.repo, "main", against="main~1", read_sources=True))
    page = parse(html)
    assert not page.all("script")
    assert [a for t, a in page.tags if t == "img" and not a.get("src", "").startswith("data:")] == []
    assert not [a for _, a in page.tags if any(k.startswith("on") for k in a)]
    text = "".join(page.text)
    assert HOSTILE in text  # shown as text: in labels, sources, messages, commit message, excerpts
    assert html.count("&lt;script&gt;") >= 5
    assert "</p></section>" not in html.replace("</p></section>\n", "")  # the text's closing tags are escaped


def test_without_sources_duplicates_say_their_payload_is_not_stored(report_repo):
    data = collect(report_repo.repo, "main")
    assert data.against is None
    dups = [d for c in data.clusters for d in c["duplicates"]]
    assert dups and all("not stored" in d["html"] for d in dups)


def test_report_of_a_plain_commit_and_the_cli(report_repo, tmp_path, monkeypatch):
    monkeypatch.setenv("DATAVERSION_REPO", report_repo.url)
    out = tmp_path / "sub" / "first.html"
    res = CliRunner().invoke(main, ["report", "main~1", "-o", str(out), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["path"] == str(out) and d["records"] == 4 and d["rejects"] == 0 and d["clusters"] == 0
    page = parse(out.read_text())
    assert {a["id"]: a for a in page.all("section")}["rejects"]["data-count"] == "0"
    res = CliRunner().invoke(main, ["report", "nope", "-o", str(out)])
    assert res.exit_code == 3 and res.stderr.startswith("error: unknown ref 'nope'")
    res = CliRunner().invoke(main, ["report", "main", "--against", "main~1", "-o", str(tmp_path / "x.html")],
                             catch_exceptions=False)
    assert res.exit_code == 0 and "wrote" in res.stdout


def test_large_commits_count_sizes_on_a_sample_of_whole_parts(report_repo, monkeypatch):
    import importlib

    monkeypatch.setattr(importlib.import_module("dataversion.report.collect"), "SIZE_SAMPLE_RECORDS", 1)
    data = collect(report_repo.repo, "main")
    n, total = data.size_sampled
    assert 0 < n < total == 11
    assert sum(c for bins in data.size_hist.values() for _, c in bins) == n
    assert sum(c for _, c in data.labels) == total  # labels still count every record
    page = parse(render(data))
    assert {a["id"]: a for a in page.all("section")}["sizes"]["data-sampled"] == str(n)


def test_report_file_gets_normal_permissions(report_repo, tmp_path):
    import os

    out = tmp_path / "perm.html"
    old = os.umask(0o022)
    try:
        write_report(report_repo.repo, "main", str(out))
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-report-")]


def test_report_of_an_s3_repository_reads_through_the_verified_readers(s3_repo_url, tmp_path):
    r = build(tmp_path, url=s3_repo_url)
    out = tmp_path / "s3.html"
    d = write_report(r.repo, "main", str(out), against="main~1", read_sources=True)
    page = parse(out.read_text())
    sections = {a["id"]: a for a in page.all("section")}
    assert d["records"] == 11 and sections["clusters"]["data-count"] == "3"
    assert sections["against"]["data-added"] == "8" and len(page.all("img")) == 2


def test_read_sources_never_follows_a_link_out_of_the_source(report_repo, tmp_path):
    from .conftest import png

    outside = tmp_path / "outside.png"
    outside.write_bytes(png(1, 16))
    link = report_repo.source / "dups" / "small.png"
    link.unlink()
    link.symlink_to(outside)
    data = collect(report_repo.repo, "main", read_sources=True)
    image = next(c for c in data.clusters if c["kept"]["modality"] == "image")
    assert "not readable at the source" in image["duplicates"][0]["html"]
    assert "<img" in image["kept"]["html"]


def test_labels_before_a_small_change_come_from_the_diff_and_equal_a_full_count(report_repo, monkeypatch):
    """`--against` a small change: the label counts before are derived from the diff's
    records (now, less added, plus removed), without a pass over the other commit; they
    equal a count of the other commit's own records, and the removed samples are the same."""
    import importlib
    from collections import Counter

    from dataversion.interop.snapshot import SnapshotView

    collect_mod = importlib.import_module("dataversion.report.collect")  # the module, not the function

    repo = report_repo.repo
    fast = collect(repo, "main", against="main~1")
    views = []
    real = SnapshotView.__init__

    def spy(self, r, commit_id, **kw):
        views.append(commit_id)
        real(self, r, commit_id, **kw)

    monkeypatch.setattr(SnapshotView, "__init__", spy)
    collect(repo, "main", against="main~1")
    assert repo.resolve("main~1") not in views  # the other commit is never listed
    monkeypatch.setattr(SnapshotView, "__init__", real)
    monkeypatch.setattr(collect_mod, "MAX_DIFF_IDS", 0)  # a large change: the full pass
    slow = collect(repo, "main", against="main~1")
    assert fast.against["labels"] == slow.against["labels"]
    assert fast.against["records_before"] == slow.against["records_before"]
    truth = Counter(r["label"] if r["label"] is not None else "(no label)" for r in repo.ls("main~1", columns=("record_id", "label")))
    for name, before, _ in fast.against["labels"]:
        assert before == truth.get(name, 0), name


def test_the_features_median_is_the_exact_median(monkeypatch):
    """Integer pixel widths had a median of 115.541 (an approximation, not a value of the
    data): it is the exact median now."""
    import importlib

    import pyarrow as pa

    import dataversion.features as features
    from dataversion.features import FEATURE_COLUMNS

    collect_module = importlib.import_module("dataversion.report.collect")
    import numpy as np

    widths = np.random.default_rng(0).integers(16, 512, 200_001)  # many values: a sketch errs
    for v in (widths, widths[:-1]):
        table = pa.table({"width": pa.array(v, FEATURE_COLUMNS["width"])})
        monkeypatch.setattr(features, "commit_features", lambda repo, cid, t=table: t)
        (row,) = [r for r in collect_module._features(None, "c")[0] if r["name"] == "width"]
        assert row["median"] == np.median(v) and row["min"] == v.min() and row["max"] == v.max()


def test_thumbnails_are_upright_and_16_bit_images_are_not_white():
    import base64
    import io

    import numpy as np
    from PIL import Image

    from dataversion.report import examples

    def shown(data):
        html = examples.thumbnail(data)
        b64 = html.split("base64,", 1)[1].split('"', 1)[0]
        return Image.open(io.BytesIO(base64.b64decode(b64)))

    y, x = np.mgrid[0:64, 0:64]
    buf = io.BytesIO()
    Image.fromarray((1000 + 59000 * x / 63).astype(np.uint16)).save(buf, "PNG")
    px = np.asarray(shown(buf.getvalue()).convert("L"), dtype=float)
    assert px.mean() < 200 and px[:, -1].mean() > px[:, 0].mean() + 150  # a gradient, not white
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 80x40, shown 40x80
    Image.new("RGB", (80, 40), (200, 30, 30)).save(buf, "JPEG", exif=exif)
    assert shown(buf.getvalue()).size == (40, 80)
