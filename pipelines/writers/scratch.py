"""Pipeline step SaveToStore: one small result of the run -> the repository store, where
the driver reads it (`pipelines.scratch`)."""

from __future__ import annotations

import apache_beam as beam

from dataversion import Repo
from dataversion.hashing import canonical_json


class SaveToStore(beam.DoFn):
    """Write one element (JSON-able, or bytes) to the repository store under `key`;
    with `pick`, only the element's `pick` item."""

    def __init__(self, repo_url: str, key: str, pick: str | None = None):
        self.repo_url, self.key, self.pick = repo_url, key, pick

    def process(self, value):
        if self.pick:
            value = value[self.pick]
        data = value if isinstance(value, bytes) else canonical_json(value)
        Repo.open(self.repo_url).store.put(self.key, data)
