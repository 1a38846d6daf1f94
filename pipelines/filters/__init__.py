"""Filters: pure functions that return a kept value or a `Drop` with a machine-readable reason.

The reasons become the counters of an ingest run and the `reason` column of its rejects.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Drop:
    """A rejected input: `reason` is a stable identifier (counted), `message` is for humans."""

    reason: str
    message: str


__all__ = ["Drop"]
