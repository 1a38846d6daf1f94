"""`dataversion ingest` and `dataversion rejects`: thin click shells over `pipelines.ingest`.

Entry points "dataversion.commands": `ingest` needs the pipelines extra (Beam), `rejects`
only the core. Only click and the dataversion core are imported here: Beam is imported when
`ingest` runs, so `dataversion --help` works without the pipelines extra installed.
"""

from __future__ import annotations

import json

import click

from dataversion.cli.support import (
    DataversionCommand,
    debug_requested,
    emit_json,
    json_option,
    repo_options,
    shown,
)
from dataversion.errors import BadInputError, NotFoundError

from .options import check_source_is_a_directory, config_option, read_ingest_config

# Every reason an object (or a JSONL line) can be rejected for: what this version writes
# (pipelines.filters, pipelines.process, pipelines.readers, dataversion.scan/jsonl/compression,
# the erasure denylist), and `unreadable`, which versions before the store-outage rule wrote.
# A test checks that each `Drop("...")` of the pipelines is here.
KNOWN_REJECT_REASONS = (
    "audio_too_long", "audio_too_short", "bad_jsonl_line", "broken_symlink", "corrupt_audio",
    "corrupt_compressed", "corrupt_image", "decompression_bomb", "empty_audio", "empty_file",
    "empty_text", "erased", "extension_mismatch", "hidden_file", "image_too_small",
    "internal_error", "invalid_utf8", "missing_text_field", "nested_compression", "not_a_regular_file",
    "not_an_image", "not_audio", "symlink_outside_source", "too_large", "too_long", "too_short",
    "truncated_audio", "unreadable", "unsupported_binary", "unsupported_format",
)


def quiet_beam_logs() -> None:
    """Beam logs the exception of a failing step (with its traceback) at ERROR before the run
    fails; the run's own error is the one line the user gets (our loggers, e.g. the S3
    retries' WARNING lines, still print). `--debug` keeps Beam's logs."""
    import logging

    if not debug_requested(click.get_current_context(silent=True)):
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)


@click.command("ingest", cls=DataversionCommand, context_settings={"ignore_unknown_options": False})
@click.argument("source")
@click.argument("beam_args", nargs=-1, type=click.UNPROCESSED)
@repo_options
@click.option("--branch", default="main", show_default=True)
@click.option("--message", "-m", default="", help="Commit message.")
@config_option
@click.option("--text-field", default=None, help="JSONL field holding the text (default: text).")
@click.option("--label-field", default=None, help="JSONL field holding the label (default: label).")
@click.option(
    "--label-map",
    "label_map_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="JSON object mapping raw labels to labels.",
)
@click.option("--no-folder-labels", is_flag=True, help="Do not label objects by their folder.")
@click.option(
    "--no-pii-redaction", is_flag=True, help="Keep e-mails, phones, IPs and card numbers."
)
@click.option(
    "--near-dup-threshold",
    type=float,
    default=None,
    help="MinHash similarity threshold (default 0.8).",
)
@click.option(
    "--phash-distance", type=int, default=None, help="pHash Hamming distance threshold (default 4)."
)
@click.option(
    "--representative",
    type=click.Choice(["first", "longest", "shortest", "oldest"]),
    default=None,
    help="Which record of a duplicate cluster is kept (default first; the branch's record always wins).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show objects read, processed and deduplicated on stderr while the run goes: a bar on a terminal, a line every 10 s otherwise (default: on).",
)
@click.option(
    "--retry-rejected",
    "retry_rejected",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[REASON]",
    help="Read again objects the branch rejected but consumed: all, or those rejected for REASON (e.g. unreadable). Put it after SOURCE.",
)
@click.option(
    "--report",
    "report_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="After a commit, write its HTML report (against its parent) to this file.",
)
def ingest_command(
    source,
    beam_args,
    repo,
    branch,
    message,
    config_file,
    text_field,
    label_field,
    label_map_file,
    no_folder_labels,
    no_pii_redaction,
    near_dup_threshold,
    phash_distance,
    representative,
    as_json,
    progress,
    retry_rejected,
    report_file,
):
    """Clean, deduplicate and commit the raw objects under SOURCE (a directory or s3://bucket/prefix).

    Beam pipeline options go after `--`, e.g.
    `dataversion ingest ./raw --repo file:///tmp/repo -- --direct_running_mode=multi_processing --direct_num_workers=2`.
    """
    import dataclasses

    import apache_beam  # noqa: F401 - without the pipelines extra, say so before any other work

    from ..ingest import run_ingest

    quiet_beam_logs()

    check_source_is_a_directory(source)
    if retry_rejected:
        _check_reject_reason(retry_rejected, repo, branch)
    config = read_ingest_config(config_file)
    changes: dict = {}
    if text_field:
        changes["text_field"] = text_field
    if label_field:
        changes["label_field"] = label_field
    if no_folder_labels:
        changes["folder_labels"] = False
    if label_map_file:
        with open(label_map_file) as f:
            try:
                changes["label_map"] = {str(k): str(v) for k, v in json.load(f).items()}
            except (ValueError, AttributeError) as e:
                raise BadInputError(
                    f"--label-map {label_map_file} must be a JSON object: {e}"
                ) from e
    if no_pii_redaction:
        changes["text"] = dataclasses.replace(config.text, redact_pii=False)
    dedup = {}
    if near_dup_threshold is not None:
        dedup["text_threshold"] = near_dup_threshold
    if phash_distance is not None:
        dedup["phash_max_distance"] = phash_distance
    if representative:
        dedup["representative"] = representative
    if dedup:
        changes["dedup"] = dataclasses.replace(config.dedup, **dedup)
    if changes:
        config = config.replace(**changes)
    report = run_ingest(
        source,
        repo.url_for_workers(),
        branch=branch,
        config=config,
        beam_args=tuple(beam_args),
        progress=True if progress is None else progress,
        message=message,
        retry_rejected=retry_rejected,
    )
    written = None
    if report_file and report.commit is not None:
        from dataversion.report import write_report

        # This run just read the source: its duplicates may be read back from it.
        written = write_report(repo.open(), report.commit, report_file, against=report.parent,
                               read_sources=True)
    if as_json:
        return emit_json({**report.to_dict(), **({"report_file": written["path"]} if written else {})},
                         indent=None, sort_keys=True)
    if report.commit is None:
        click.echo(report.message)
        if report_file:
            click.echo(f"no commit: no report written to {report_file}")
        return
    click.echo(f"[{branch} {report.commit[:12]}] {report.message}")
    click.echo(
        f"inputs {report.inputs}: kept {report.kept}, duplicates {report.duplicates}, rejected {report.rejected}"
    )
    for reason, n in report.reasons.items():
        click.echo(f"  rejected {reason}: {n}")
    if written:
        click.echo(f"report: {written['path']}")


def _check_reject_reason(reason: str, repo, branch: str) -> None:
    """BadInputError listing the known reasons when `reason` is none of them: neither one this
    version rejects for nor one the branch's ingest commits counted (older versions' reasons)."""
    if reason in KNOWN_REJECT_REASONS:
        return
    recorded = _recorded_reasons(repo, branch)
    if reason in recorded:
        return
    known = sorted(set(KNOWN_REJECT_REASONS) | recorded)
    raise BadInputError(
        f"unknown reject reason {reason!r} for --retry-rejected",
        hint=f"known reasons: {', '.join(known)}; `dataversion rejects {branch}` lists the branch's rejects, "
        "and --retry-rejected without a reason retries them all",
    )


def _recorded_reasons(repo, branch: str) -> set[str]:
    """The reject reasons the ingest commits of `branch` counted (none without a repository
    or branch)."""
    try:
        r = repo.open()
        if r.branch_tip(branch) is None:
            return set()
        commits = r.log(branch)
    except NotFoundError:
        return set()
    return {k for c in commits for k in ((c.get("counts") or {}).get("reasons") or {})}


@click.command("rejects", cls=DataversionCommand)
@click.argument("ref", default="main")
@repo_options
@json_option
def rejects_command(ref, repo, as_json):
    """List the inputs an ingest commit rejected, with their reasons.

    --json prints a list of {source, reason, message}.
    """
    from ..ingest import read_rejects

    rows = read_rejects(repo.open(), ref)
    if as_json:
        return emit_json(rows, indent=None, sort_keys=True)
    for r in rows:
        click.echo(f"{shown(r['source'])}\t{r['reason']}\t{r['message']}")
