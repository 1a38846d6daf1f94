"""The command registry: every command listed, the shared options on each, optional
commands from entry points, and what a command with a missing extra says."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from dataversion.cli import CORE_COMMANDS, main, registry
from dataversion.cli.registry import ENTRY_POINT_GROUP, CommandRegistry

ROOT = Path(__file__).resolve().parents[3]
OPTIONAL = {"ingest", "rejects", "runner", "runs", "features"}
LISTING = {"log", "ls", "show", "diff", "branch", "tag", "reflog", "rejects", "runs", "lineage", "cache status", "verify", "gc"}
S3_FLAGS = {"--repo", "--endpoint-url", "--access-key", "--secret-key"}


def _leaves(group: click.Group, ctx: click.Context, prefix: str = ""):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from _leaves(command, ctx, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def test_registry_lists_every_command_and_each_takes_the_shared_options():
    ctx = click.Context(main)
    assert set(main.list_commands(ctx)) == set(CORE_COMMANDS) | OPTIONAL
    leaves = dict(_leaves(main, ctx))
    assert {"cache warm", "cache status", "features publish", "features historical"} <= set(leaves)
    for path, command in leaves.items():
        flags = {opt for p in command.params for opt in p.opts}
        assert S3_FLAGS | {"--debug"} <= flags, (path, flags)
        if path in LISTING:
            assert "--json" in flags, path
    assert LISTING <= set(leaves)


def test_help_lists_every_command_with_its_short_help():
    out = CliRunner().invoke(main, ["--help"]).stdout
    rows = dict(line.split(None, 1) for line in out.split("Commands:")[1].strip().splitlines())
    assert set(rows) == set(CORE_COMMANDS) | OPTIONAL
    assert all(text.strip() and "unavailable" not in text for text in rows.values())


def test_optional_commands_declare_their_extras():
    assert [main.extras_of(n) for n in ("ingest", "rejects", "runner", "runs", "features", "log")] == [
        ("pipelines",), (), ("runner", "pipelines"), (), ("feast",), ()]


def _registry_with(monkeypatch, *eps: EntryPoint) -> CommandRegistry:
    monkeypatch.setattr(registry, "discover_entry_points", lambda: list(eps))

    @click.group(cls=CommandRegistry, core={"log": CORE_COMMANDS["log"]})
    def root():
        """A root group."""

    return root


def test_a_command_whose_dependency_is_missing_still_appears_and_names_its_extra(monkeypatch):
    root = _registry_with(monkeypatch, EntryPoint("needy", "no_such_dependency_xyz:command [pipelines]", ENTRY_POINT_GROUP))
    assert "(unavailable: 'needy' needs the pipelines extra" in CliRunner().invoke(root, ["--help"]).stdout
    result = CliRunner().invoke(root, ["needy", "x", "--repo", "y", "--json"])
    assert (result.exit_code, result.stderr) == (2, "error: 'needy' needs the pipelines extra: pip install 'dataversion[pipelines]'\n")


def test_a_broken_plugin_does_not_break_the_others(monkeypatch):
    root = _registry_with(
        monkeypatch,
        EntryPoint("broken", "dataversion.cli.support:no_such_attribute", ENTRY_POINT_GROUP),
        EntryPoint("log", "no_such_dependency_xyz:command", ENTRY_POINT_GROUP),  # a core name stays core
    )
    assert set(root.list_commands(click.Context(root))) == {"log", "broken"}
    assert root.get_command(click.Context(root), "log") is main.get_command(click.Context(main), "log")
    result = CliRunner().invoke(root, ["broken"])
    assert result.exit_code == 1 and result.stderr.startswith("error: 'broken' cannot be loaded from dataversion.cli.support:no_such_attribute")


BLOCK_BEAM = textwrap.dedent(
    """
    import sys

    class NoBeam:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "apache_beam":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoBeam())
    from dataversion.cli import main

    main(["ingest", "x"], prog_name="dataversion")
    """
)


def test_ingest_without_the_pipelines_extra_says_so_in_one_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAVERSION_")}
    p = subprocess.run([sys.executable, "-c", BLOCK_BEAM], capture_output=True, text=True, cwd=ROOT,
                       env={**env, "PYTHONPATH": str(ROOT)})
    assert (p.returncode, p.stderr, p.stdout) == (
        2, "error: 'ingest' needs the pipelines extra: pip install 'dataversion[pipelines]'\n", "")


@pytest.mark.parametrize("args", [["ingest", "--help"], ["--help"]])
def test_help_needs_no_extra(args):
    code = BLOCK_BEAM.replace('["ingest", "x"]', repr(args))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0 and "Usage: dataversion" in p.stdout and p.stderr == ""


def test_without_metadata_only_the_core_commands_exist(monkeypatch):
    monkeypatch.setattr(registry, "entry_points", lambda group: [])

    @click.group(cls=CommandRegistry, core=CORE_COMMANDS)
    def root():
        """A root group."""

    assert set(root.list_commands(click.Context(root))) == set(CORE_COMMANDS)
    result = CliRunner().invoke(root, ["ingest", "x"])
    assert result.exit_code == 2 and "No such command 'ingest'" in result.stderr


def test_installed_metadata_matches_the_pyproject():
    """The installed entry points (pip install [-e] ., which scripts/setup.sh redoes whenever
    pyproject.toml changes) are the table pyproject.toml declares."""
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][ENTRY_POINT_GROUP]
    installed = {ep.name: ep.value for ep in registry.entry_points(group=ENTRY_POINT_GROUP)}
    assert {k: installed.get(k) for k in declared} == declared
