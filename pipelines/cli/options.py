"""Options that `dataversion ingest` and `dataversion runner` share."""

from __future__ import annotations

import json

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
