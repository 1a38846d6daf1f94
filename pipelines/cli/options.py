"""Options that `dataversion ingest` and `dataversion runner` share."""

from __future__ import annotations

import json
import os
from urllib.parse import urlparse

import click

from dataversion.errors import BadInputError

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="JSON file of IngestConfig overrides.",
)


def read_ingest_config(config_file: str | None):
    """The IngestConfig of a --config file (the defaults without one).

    BadInputError if the file is not JSON or its fields are invalid.
    """
    from ..config import IngestConfig

    if not config_file:
        return IngestConfig()
    with open(config_file) as f:
        try:
            overrides = json.load(f)
        except ValueError as e:
            raise BadInputError(f"--config {config_file} is not valid JSON: {e}") from e
    return IngestConfig.from_dict(overrides)


def check_source_is_a_directory(source: str) -> None:
    """BadInputError when a local SOURCE (a path or file://) exists and is not a directory:
    ingestion reads a directory or an S3 prefix, `dataversion add FILE` commits one file. (A
    missing one is left to the reader, which says it does not exist.)"""
    if "://" in source and not source.startswith("file://"):
        return
    path = urlparse(source).path if source.startswith("file://") else os.path.expanduser(source)
    if os.path.exists(path) and not os.path.isdir(path):
        what = "a file, not a directory" if os.path.isfile(path) else "not a directory"
        raise BadInputError(
            f"source {source} is {what}",
            hint="ingest takes a directory or an s3://bucket/prefix; `dataversion add FILE` commits single files",
        )
