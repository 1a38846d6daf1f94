"""`dataversion cache warm|status`: the read tier from the command line.

Registered by `dataversion.cli` with `main.add_command(cache_group, "cache")`. Imports only
click and the core at the top; self-contained so that it does not import `dataversion.cli`
(no import cycle whichever module is loaded first).
"""

from __future__ import annotations

import json

import click

from .support import open_repo, repo_option
from .support import run_command as _run


def _tier(name: str, cache_dir: str | None, max_bytes: int | None):
    from ..cache import LocalDiskCache, open_tier

    if name == "local":
        return LocalDiskCache(cache_dir, max_bytes)
    return open_tier(name)


_tier_option = click.option("--tier", type=click.Choice(["local", "alluxio"]), default="local", show_default=True,
                            help="local: the disk cache (DATAVERSION_CACHE_DIR); alluxio: DATAVERSION_ALLUXIO_WORKERS.")
_dir_option = click.option("--cache-dir", default=None, metavar="DIR", help="Local cache directory (default: DATAVERSION_CACHE_DIR or ~/.cache/dataversion/shards).")
_max_option = click.option("--max-bytes", type=int, default=None, help="Local cache size bound (default: DATAVERSION_CACHE_MAX_BYTES or 20 GiB).")


@click.group("cache")
def cache_group() -> None:
    """Preload snapshots into the shard cache and inspect it."""


@cache_group.command("warm")
@click.argument("ref")
@repo_option
@_tier_option
@_dir_option
@_max_option
@click.option("--json", "as_json", is_flag=True)
def warm_cmd(ref, repo_url, tier, cache_dir, max_bytes, as_json):
    """Fetch every shard of REF into the cache tier."""

    def go():
        from ..cache import warm

        result = warm(open_repo(repo_url), ref, _tier(tier, cache_dir, max_bytes))
        if as_json:
            click.echo(json.dumps(result, indent=2))
        else:
            click.echo(f"warmed {result['commit'][:12]} into {result['tier']}: {result['shards']} shards, "
                       f"{result['fetched']} fetched ({result['bytes_fetched']} bytes), {result['already_cached']} already cached, {result['seconds']} s")

    _run(go)


@cache_group.command("status")
@_tier_option
@_dir_option
@click.option("--json", "as_json", is_flag=True)
def status_cmd(tier, cache_dir, as_json):
    """Size, hit rate and evictions of the cache."""

    def go():
        from ..cache import status

        result = status(_tier(tier, cache_dir, None))
        if as_json:
            click.echo(json.dumps(result, indent=2))
            return
        for k, v in result.items():
            click.echo(f"{k:>18}: {v}")

    _run(go)
