"""The pipelines' `dataversion` commands (`ingest`, `rejects`, `runner`, `runs`, `features`).

Found by `dataversion` through the "dataversion.commands" entry points in pyproject.toml;
built on `dataversion.cli.support` like the core commands. Only click and the dataversion
core are imported at the top of these modules: Beam, APScheduler, Feast load when a command
runs, so `dataversion --help` works without the extras.
"""
