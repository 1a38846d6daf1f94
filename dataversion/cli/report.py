"""`dataversion report`: one static HTML page about a commit."""

from __future__ import annotations

import click

from .support import DataversionCommand, emit_json, json_option, repo_options


@click.command("report", cls=DataversionCommand)
@click.argument("ref", default="main")
@click.option("--against", default=None, metavar="REF2", help="Also show what changed since REF2.")
@click.option("-o", "--output", default="report.html", show_default=True, type=click.Path(dir_okay=False),
              help="Where to write the HTML file.")
@click.option("--read-sources", is_flag=True,
              help="Show dropped duplicates' content by reading them from the ingest source the commit names "
                   "(only for repositories you trust: the commit says where to read).")
@json_option
@repo_options
def report_command(ref, against, output, read_sources, as_json, repo):
    """Write a static HTML report of REF: modalities over the branch, rejects, duplicate
    clusters, labels, sizes, features, and what changed against REF2. No server, no network:
    every asset is inline."""
    from ..report import write_report

    d = write_report(repo.open(), ref, output, against=against, read_sources=read_sources)
    if as_json:
        return emit_json(d)
    click.echo(f"wrote {d['path']} ({d['bytes']:,} bytes): report of {d['commit'][:12]}, {d['records']:,} records")
