"""The import graph: the core never imports `pipelines`, and importing the core and the CLI
(with every command loaded, as `--help` does) pulls in no heavy optional dependency."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("apache_beam", "torch", "feast")


def _imported_modules(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_core_package_never_imports_pipelines():
    offenders = {}
    files = sorted((ROOT / "dataversion").rglob("*.py"))
    assert len(files) > 20
    for path in files:
        found = {m for m in _imported_modules(ast.parse(path.read_text(), str(path))) if m.split(".")[0] == "pipelines"}
        if found:
            offenders[str(path.relative_to(ROOT))] = sorted(found)
    assert offenders == {}


def test_importing_the_core_and_the_cli_leaves_out_the_heavy_dependencies():
    code = (
        "import sys, click, dataversion, dataversion.repo, dataversion.cli\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not heavy, ('import', heavy)\n"
        "ctx = click.Context(dataversion.cli.main)\n"
        "loaded = [dataversion.cli.main.get_command(ctx, n) for n in dataversion.cli.main.list_commands(ctx)]\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not heavy, ('every command loaded', heavy)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_console_script_runs_without_optional_dependencies(tmp_path):
    """`import dataversion` and `dataversion --help` must not import Beam, torch or Feast."""
    code = (
        "import sys, dataversion, dataversion.cli\n"
        "heavy = [m for m in ('apache_beam', 'torch', 'feast') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = subprocess.run([sys.executable, "-m", "dataversion", "--help"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and "Usage: " in out.stdout and "checkout" in out.stdout
