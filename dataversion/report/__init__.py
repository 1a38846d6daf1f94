"""`dataversion report`: one static HTML page describing a commit (no server, no network).

`write_report(repo, ref, path, against=None)` gathers the figures (`collect`), renders them
(`render`, inline SVG charts from `charts`, examples from `examples`) and writes the file.
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any

from ..stores.atomic import FILE_MODE
from .collect import ReportData, collect
from .render import render

if TYPE_CHECKING:
    from ..repo import Repo

__all__ = ["ReportData", "collect", "render", "write_report"]


def write_report(repo: Repo, ref: str, path: str, *, against: str | None = None, read_sources: bool = False) -> dict[str, Any]:
    """Write the report of `ref` (vs `against`) to `path` atomically; what was written.

    `read_sources`: show duplicates' payloads by reading them back from the ingest source
    the commit's provenance names (only for repositories you trust: the provenance says
    where to read)."""
    data = collect(repo, ref, against=against, read_sources=read_sources)
    page = render(data).encode("utf-8")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-report-")
    try:
        os.fchmod(fd, FILE_MODE)  # a report is a normal file to share, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            f.write(page)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return {"path": os.path.abspath(path), "commit": data.commit_id, "bytes": len(page), "records": data.records,
            "clusters": len(data.clusters), "rejects": sum(n for _, n in data.rejects_by_reason)}
