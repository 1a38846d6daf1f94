"""Fixtures for the pipeline tests (data builders live in pipeline_samples.py)."""

from __future__ import annotations

import random

import pytest


@pytest.fixture(scope="session")
def vocab() -> list[str]:
    rng = random.Random(7)
    return [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
        for _ in range(4000)
    ]


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A Spark standalone master + one worker on loopback for the whole session (started on
    first use, ~15 s; stopped after). Skips where pyspark or Java is missing, except under
    CI=true, where it fails."""
    import os

    from tests.conftest import _stop
    from tests.sparkcluster import missing, start_cluster, stop_spark_session

    why = missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Spark tests: {why}")
        pytest.skip(why)
    cluster, procs = start_cluster(tmp_path_factory.mktemp("spark"))
    try:
        yield cluster
    finally:
        stop_spark_session()
        for p in reversed(procs):
            _stop(p)
