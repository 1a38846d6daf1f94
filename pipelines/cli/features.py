"""`dataversion features publish|historical`: thin click shells over `pipelines.features`
and `dataversion.features`.

Entry point "dataversion.commands" `features`, needing the feast extra (`publish` imports
Feast, `historical` pandas for its table). Only click and the dataversion core are imported
here; Feast, numpy-heavy code and the pipeline load when a command runs.
"""

from __future__ import annotations

import click

from dataversion.cli.support import DataversionGroup, emit_json, json_option, repo_options


@click.group("features", cls=DataversionGroup)
def features_group() -> None:
    """Per-commit features: publish them to Feast, read a commit's training frame."""


@features_group.command("publish")
@click.argument("ref")
@click.option("--feature-repo", default="feature_repo", show_default=True, metavar="PATH",
              help="The Feast repository (its feature_store.yaml and definitions.py).")
@repo_options
@json_option
def publish_command(ref: str, feature_repo: str, repo, as_json: bool) -> None:
    """Publish REF (and its unpublished ancestors) to Feast: export each commit's new and
    changed rows, feast apply if the definitions changed, materialize each commit's own
    time window. Idempotent: publishing again changes nothing."""
    from ..features import publish

    report = publish(repo.open(), ref, feature_repo, progress=not as_json)
    if as_json:
        return emit_json(report)
    click.echo(report["message"])
    for p in report["published"]:
        rows = ", ".join(f"{v} {n}" for v, n in p["rows"].items())
        click.echo(f"  {p['commit'][:12]} ({p['time']}): {rows}")


@features_group.command("erase")
@click.option("--feature-repo", default="feature_repo", show_default=True, metavar="PATH",
              help="The Feast repository (its feature_store.yaml and definitions.py).")
@repo_options
@json_option
def erase_command(feature_repo: str, repo, as_json: bool) -> None:
    """Apply the repository's erasures (`dataversion erase`) to a Feast repository: rows
    removed from the offline files, online rows overwritten with nulls. `publish` does it
    too, before it publishes anything."""
    from ..features import erase_from_feature_repo

    report = erase_from_feature_repo(repo.open(), feature_repo)
    if as_json:
        return emit_json(report)
    click.echo(f"{report['records']} erased record(s): {report['offline_rows_removed']} offline row(s) removed, "
               f"{report['online_rows_nulled']} online row(s) set to null in {report['feature_repo']}")


@features_group.command("historical")
@click.argument("ref")
@repo_options
@click.option("--feature", "features", multiple=True, metavar="VIEW:NAME",
              help="Only these features (repeatable; default all).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, metavar="FILE.parquet",
              help="Write the frame to a Parquet file.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary (and rows if no --out).")
def historical_command(ref: str, repo, features: tuple[str, ...], out: str | None, as_json: bool) -> None:
    """The training frame of REF: every record it holds with its features as of that commit."""
    from dataversion.features import historical

    r = repo.open()
    commit = r.resolve(ref)
    table = historical(r, commit, list(features) or None)
    summary = {"commit": commit, "rows": table.num_rows, "columns": table.column_names}
    if out:
        import pyarrow.parquet as pq

        pq.write_table(table, out)
        summary["out"] = out
    if as_json:
        if not out:
            rows = table.to_pylist()
            for row in rows:
                row["event_timestamp"] = row["event_timestamp"].isoformat()
            summary["records"] = rows
        emit_json(summary)
    elif out:
        click.echo(f"wrote {table.num_rows} rows x {table.num_columns} columns to {out}")
    else:
        click.echo(table.to_pandas().to_string(max_rows=40))
