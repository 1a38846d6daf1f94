"""`dataversion cache warm|purge|status`: the read tier from the command line.

A core command of `dataversion.cli` (CORE_COMMANDS). Imports only click and the core at the
top (alluxiofs only for `--tier alluxio`).
"""

from __future__ import annotations

import click

from .support import DataversionGroup, emit_json, json_option, repo_options


def _tier(name: str, cache_dir: str | None, max_bytes: int | None):
    from ..cache import LocalDiskCache, open_tier

    if name == "local":
        return LocalDiskCache(cache_dir, max_bytes)
    return open_tier(name)


_tier_option = click.option("--tier", type=click.Choice(["local", "alluxio"]), default="local", show_default=True,
                            help="local: the disk cache (DATAVERSION_CACHE_DIR); alluxio: DATAVERSION_ALLUXIO_WORKERS.")
_dir_option = click.option("--cache-dir", default=None, metavar="DIR", help="Local cache directory (default: DATAVERSION_CACHE_DIR or ~/.cache/dataversion/shards).")
_max_option = click.option("--max-bytes", type=int, default=None, help="Local cache size bound (default: DATAVERSION_CACHE_MAX_BYTES or 20 GiB).")


@click.group("cache", cls=DataversionGroup)
def cache_group() -> None:
    """Preload snapshots into the shard cache and inspect it."""


@cache_group.command("warm")
@click.argument("ref")
@repo_options
@_tier_option
@_dir_option
@_max_option
@json_option
def warm_cmd(ref, repo, tier, cache_dir, max_bytes, as_json):
    """Fetch every shard of REF into the cache tier."""
    from ..cache import warm

    result = warm(repo.open(), ref, _tier(tier, cache_dir, max_bytes))
    if as_json:
        return emit_json(result)
    click.echo(f"warmed {result['commit'][:12]} into {result['tier']}: {result['shards']} shards, "
               f"{result['fetched']} fetched ({result['bytes_fetched']} bytes), {result['already_cached']} already cached, {result['seconds']} s")
    if result["held"] is not None and result["held"] < result["shards"]:
        click.echo(f"warning: the cache holds {result['held']} of the {result['shards']} shards ({result['bytes']:,} bytes): "
                   "the snapshot is larger than the cache, the first shards were evicted for the last "
                   "(raise --max-bytes or DATAVERSION_CACHE_MAX_BYTES)", err=True)


@cache_group.command("purge")
@repo_options
@_tier_option
@_dir_option
@json_option
def purge_cmd(repo, tier, cache_dir, as_json):
    """Delete the cached copies of every shard an erasure of --repo replaced."""
    from ..cache import purge

    result = purge(repo.open(), _tier(tier, cache_dir, None))
    if as_json:
        return emit_json(result)
    click.echo(f"purged {result['purged']} cached shard(s) of {result['replaced_shards']} replaced by erasures from {result['tier']}")


@cache_group.command("status")
@click.option("--ref", default="main", show_default=True, help="With --repo: the snapshot whose cached shards to count.")
@repo_options
@_tier_option
@_dir_option
@json_option
def status_cmd(ref, repo, tier, cache_dir, as_json):
    """Size, hit rate and evictions of the cache; with --repo, how much of REF it holds."""
    from ..cache import status

    cache = _tier(tier, cache_dir, None)
    result = status(cache)
    if repo.url:  # --repo or DATAVERSION_REPO
        result.update(_snapshot_coverage(repo.open(), ref, cache))
    if as_json:
        return emit_json(result)
    for k, v in result.items():
        click.echo(f"{k:>20}: {v}")


def _snapshot_coverage(repo, ref: str, cache) -> dict:
    """How many of the shards of `ref` the tier holds (None for a tier that cannot tell)."""
    commit = repo.resolve(ref)
    shards = {s.id for s in repo.shard_table(repo.read_packing(commit))}
    contains = getattr(cache, "contains", None)
    return {
        "repo": repo.url,
        "commit": commit,
        "commit_shards": len(shards),
        "commit_shards_cached": sum(1 for s in shards if contains(s)) if contains else None,
    }
