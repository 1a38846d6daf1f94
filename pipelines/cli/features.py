"""`dataversion features publish|historical`: thin click shells over `pipelines.features`
and `dataversion.features`.

Registered by `dataversion.cli` with `main.add_command(features_group, "features")`. Only
click and the dataversion core are imported here; Feast, numpy-heavy code and the pipeline
load when a command runs.
"""

from __future__ import annotations

import json

import click

from dataversion.cli.support import open_repo as _open
from dataversion.cli.support import repo_option as _repo_option
from dataversion.cli.support import run_command as _run


@click.group("features")
def features_group() -> None:
    """Per-commit features: publish them to Feast, read a commit's training frame."""


@features_group.command("publish")
@click.argument("ref")
@click.option("--feature-repo", default="feature_repo", show_default=True, metavar="PATH",
              help="The Feast repository (its feature_store.yaml and definitions.py).")
@_repo_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def publish_command(ref: str, feature_repo: str, repo_url: str | None, as_json: bool) -> None:
    """Publish REF (and its unpublished ancestors) to Feast: export each commit's new and
    changed rows, feast apply if the definitions changed, materialize each commit's own
    time window. Idempotent: publishing again changes nothing."""

    def go():
        from ..features import publish

        report = publish(_open(repo_url), ref, feature_repo, progress=not as_json)
        if as_json:
            click.echo(json.dumps(report, indent=2))
            return
        click.echo(report["message"])
        for p in report["published"]:
            rows = ", ".join(f"{v} {n}" for v, n in p["rows"].items())
            click.echo(f"  {p['commit'][:12]} ({p['time']}): {rows}")

    _run(go)


@features_group.command("historical")
@click.argument("ref")
@_repo_option
@click.option("--feature", "features", multiple=True, metavar="VIEW:NAME",
              help="Only these features (repeatable; default all).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, metavar="FILE.parquet",
              help="Write the frame to a Parquet file.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary (and rows if no --out).")
def historical_command(ref: str, repo_url: str | None, features: tuple[str, ...], out: str | None,
                       as_json: bool) -> None:
    """The training frame of REF: every record it holds with its features as of that commit."""

    def go():
        from dataversion.features import historical

        repo = _open(repo_url)
        commit = repo.resolve(ref)
        table = historical(repo, commit, list(features) or None)
        summary = {"commit": commit, "rows": table.num_rows, "columns": table.column_names}
        if out:
            import pyarrow.parquet as pq

            pq.write_table(table, out)
            summary["out"] = out
        if as_json:
            if not out:
                rows = table.to_pylist()
                for r in rows:
                    r["event_timestamp"] = r["event_timestamp"].isoformat()
                summary["records"] = rows
            click.echo(json.dumps(summary, indent=2, default=str))
        elif out:
            click.echo(f"wrote {table.num_rows} rows x {table.num_columns} columns to {out}")
        else:
            click.echo(table.to_pandas().to_string(max_rows=40))

    _run(go)
