"""The report in a real browser: headless Chromium (Debian's `chromium`) renders it with no
console error, the DOM holds the expected counts, nothing scripted runs, and the screenshot
is not blank. Skips where Chromium is missing, except under CI=true (scripts/setup.sh
installs it), where it fails."""

from __future__ import annotations

import json
import os

import pytest

from dataversion.report import write_report

from .chromium import Browser, find_chromium, page_url
from .conftest import build

COUNTS_JS = """JSON.stringify({
  sections: [...document.querySelectorAll('section')].map(s => s.id),
  records: document.querySelector('#overview').dataset.records,
  columns: document.querySelectorAll('#history g.column').length,
  rejectRows: document.querySelectorAll('tr.reject').length,
  clusters: document.querySelectorAll('.cluster').length,
  duplicates: document.querySelectorAll('.member.dup').length,
  marks: document.querySelectorAll('.cluster mark').length,
  thumbsLoaded: [...document.querySelectorAll('img.thumb')].filter(i => i.complete && i.naturalWidth > 0).length,
  labelBars: document.querySelectorAll('#labels g.bar').length,
  histograms: document.querySelectorAll('#sizes svg.histogram').length,
  changes: document.querySelectorAll('tr.change').length,
  scripts: document.scripts.length,
  width: document.documentElement.scrollWidth,
  height: document.documentElement.scrollHeight,
})"""


@pytest.fixture(scope="module")
def chromium():
    pytest.importorskip("websockets", reason="websockets is not installed (dev extra)")
    binary = find_chromium()
    if binary is None:
        msg = "Chromium not installed (Debian package `chromium`; scripts/setup.sh installs it where apt works)"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(msg + "; the browser test must run in CI", pytrace=False)
        pytest.skip(msg)
    browser = Browser.start(binary)
    try:
        yield browser
    finally:
        browser.close()


def not_blank(path: str) -> tuple[float, int]:
    """(share of pixels that are not the background, number of distinct colours)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        px = np.asarray(img.convert("RGB")).reshape(-1, 3)
    bg = px[-1]
    return float((px != bg).any(axis=1).mean()), len(np.unique(px, axis=0))


def test_report_renders_in_chromium_with_counts_no_errors_and_a_real_screenshot(chromium, tmp_path):
    r = build(tmp_path)
    out = tmp_path / "report.html"
    write_report(r.repo, "main", str(out), against="main~1", read_sources=True)
    page = chromium.new_page()
    page.load(page_url(out))
    counts = json.loads(page.evaluate(COUNTS_JS))
    assert counts["sections"] == ["overview", "history", "rejects", "clusters", "labels", "sizes", "features", "against"]
    assert counts["records"] == "11" and counts["columns"] == 2
    assert counts["rejectRows"] == 3 and counts["clusters"] == 3 and counts["duplicates"] == 4
    assert counts["marks"] >= 2 and counts["thumbsLoaded"] == 2  # data-URI thumbnails decoded by the browser
    assert counts["labelBars"] == 5 and counts["histograms"] >= 3 and counts["changes"] == 9
    assert counts["scripts"] == 0 and counts["width"] <= 1200 and counts["height"] > 1000
    assert page.problems() == []
    shot = tmp_path / "report.png"
    page.screenshot(str(shot))
    share, colours = not_blank(str(shot))
    assert share > 0.05 and colours > 20, (share, colours)


def test_hostile_content_runs_nothing_in_the_browser(chromium, tmp_path):
    r = build(tmp_path, hostile=True)
    out = tmp_path / "hostile.html"
    write_report(r.repo, "main", str(out), against="main~1", read_sources=True)
    page = chromium.new_page()
    page.load(page_url(out))
    counts = json.loads(page.evaluate(COUNTS_JS))
    assert counts["scripts"] == 0 and counts["clusters"] == 3
    assert page.evaluate("document.querySelectorAll('img:not(.thumb), [onerror], iframe').length") == 0
    assert page.evaluate("document.body.innerText.includes('<script>alert(\"x\")</script>')") is True
    assert page.problems() == []  # no dialog opened, no blocked load, no exception
