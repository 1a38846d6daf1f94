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
