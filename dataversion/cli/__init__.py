"""The `dataversion` command: a thin shell over the Python API in `dataversion.repo`.

`main` is the root group (the console entry point `dataversion.cli:main`); the commands live
in one module per job (`records`, `history`, `refs`, `maintenance`, `lineage`, `cache`, `erase`) and
the optional ones in other packages, found through entry points (`registry`). What every
command shares (the one error wrapper, --repo/--json/--debug, JSON output) is `support`.

Every listing command has --json. Errors print one line (`error: ...`) and exit non-zero;
tracebacks only with --debug (or DATAVERSION_DEBUG=1). Progress bars go to stderr and only
when stderr is a terminal.
"""

from __future__ import annotations

import click

from .registry import CommandRegistry
from .support import DEBUG_KEY

# name -> "module:attribute"; the optional commands are entry points (see `registry`)
CORE_COMMANDS = {
    "init": "dataversion.cli.records:init_command",
    "add": "dataversion.cli.records:add_command",
    "rm": "dataversion.cli.records:rm_command",
    "checkout": "dataversion.cli.records:checkout_command",
    "log": "dataversion.cli.history:log_command",
    "show": "dataversion.cli.history:show_command",
    "ls": "dataversion.cli.history:ls_command",
    "diff": "dataversion.cli.history:diff_command",
    "branch": "dataversion.cli.refs:branch_command",
    "tag": "dataversion.cli.refs:tag_command",
    "reset": "dataversion.cli.refs:reset_command",
    "reflog": "dataversion.cli.refs:reflog_command",
    "revert": "dataversion.cli.refs:revert_command",
    "gc": "dataversion.cli.maintenance:gc_command",
    "verify": "dataversion.cli.maintenance:verify_command",
    "upgrade": "dataversion.cli.maintenance:upgrade_command",
    "repack": "dataversion.cli.maintenance:repack_command",
    "inspect": "dataversion.cli.lineage:inspect_command",
    "lineage": "dataversion.cli.lineage:lineage_command",
    "unpin": "dataversion.cli.lineage:unpin_command",
    "cache": "dataversion.cli.cache:cache_group",
    "report": "dataversion.cli.report:report_command",
    "erase": "dataversion.cli.erase:erase_command",
    "erasures": "dataversion.cli.erase:erasures_command",
}


@click.group(cls=CommandRegistry, core=CORE_COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="dataversion")
@click.option("--debug", is_flag=True, help="Show tracebacks for every command (also: DATAVERSION_DEBUG=1).")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """dataversion: Git-like versioned datasets for training.

    \b
    Quick start:
      dataversion init --repo ./repo
      dataversion add ./raw -m "first import" --repo ./repo
      dataversion log --repo ./repo
    Set DATAVERSION_REPO to skip --repo.
    """
    if debug:
        ctx.meta[DEBUG_KEY] = True
