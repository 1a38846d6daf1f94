"""Which commands `dataversion` has: one table, each command loaded only when it is used.

The table is built once per process from
- the core commands (`CORE_COMMANDS` in `dataversion.cli`): always there;
- the entry points of the group "dataversion.commands" (`[project.entry-points."dataversion.commands"]`
  in pyproject.toml): the optional commands (`ingest`, `runner`, `features`...), and any
  other distribution's. The extras an entry point names (`module:attr [pipelines]`) are
  the ones the command needs.

Metadata comes from the installed distributions (`scripts/setup.sh` reinstalls whenever
pyproject.toml changes); a tree that was never installed has only the core commands.

A command whose module cannot be imported still appears (in `--help` too); running it
prints one line and exits 2, e.g. `error: 'ingest' needs the pipelines extra: pip install
'dataversion[pipelines]'` when a dependency is missing.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click

from ..errors import BadInputError, DataversionError
from .support import DataversionCommand, is_missing_dependency, missing_dependency_error

ENTRY_POINT_GROUP = "dataversion.commands"


def discover_entry_points() -> list[EntryPoint]:
    """The optional commands: the installed entry points of the group."""
    return list(entry_points(group=ENTRY_POINT_GROUP))


class CommandRegistry(click.Group):
    """The root group: lists every command of the table, imports one when it is asked for."""

    def __init__(self, *args: Any, core: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._core = core

    @functools.cached_property
    def table(self) -> dict[str, EntryPoint]:
        """Command name -> entry point; core names first, then the first entry of a name."""
        table: dict[str, EntryPoint] = {}
        core = (EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in self._core.items())
        for ep in itertools.chain(core, discover_entry_points()):
            table.setdefault(ep.name, ep)
        return table

    def extras_of(self, name: str) -> Sequence[str]:
        """The extras the entry point of command `name` declares (empty if none or unknown)."""
        ep = self.table.get(name)
        return tuple(ep.extras) if ep is not None else ()

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(self.table))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        ep = self.table.get(name)
        if ep is None:
            return None
        if ep.name in self._core:
            command = ep.load()  # a core command that cannot load is a bug: let it show
        else:
            command = _load_optional(ep)
        self.commands[name] = command
        return command


def _load_optional(ep: EntryPoint) -> click.Command:
    """The command of an entry point, or a stand-in that says why it cannot run."""
    try:
        command = ep.load()
    except ModuleNotFoundError as e:
        if not is_missing_dependency(e):
            return _unavailable(ep.name, BadInputError(f"{ep.name!r} cannot be loaded from {ep.value}: {e}"), e)
        return _unavailable(ep.name, missing_dependency_error(ep.name, ep.extras, e.name), e)
    except Exception as e:  # noqa: BLE001 - a broken plugin must not break `dataversion --help`
        return _unavailable(ep.name, DataversionError(f"{ep.name!r} cannot be loaded from {ep.value}: {type(e).__name__}: {e}"), e)
    if not isinstance(command, click.Command):
        return _unavailable(ep.name, DataversionError(f"{ep.name!r}: {ep.value} is not a click command"), None)
    return command


def _unavailable(name: str, error: DataversionError, cause: BaseException | None) -> click.Command:
    def callback() -> None:
        raise error from cause

    return DataversionCommand(
        name, callback=callback, help=f"Unavailable: {error}", short_help=f"(unavailable: {error})",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
