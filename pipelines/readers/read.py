"""Pipeline step ReadAndProcess: a batch of listed objects -> candidate records + an audit.

Reading is the only I/O here; splitting, cleaning and featurizing are
`pipelines.process.process_objects`, a plain function the tests call without Beam.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from dataversion.errors import DataversionError

from ..config import IngestConfig
from ..process import WorkItem, process_objects
from .source import open_source

AUDIT = "audit"  # the tagged output: {objects, inputs, rejects} per batch


class ReadAndProcess(beam.DoFn):
    """A batch of work items -> one candidate table (main) + one audit dict (`AUDIT`).

    An object that cannot be read is one reject (`unreadable`), not a failed pipeline.
    """

    def __init__(self, source_url: str, config: IngestConfig):
        self.source_url = source_url
        self.config = config

    def setup(self):
        self.source = open_source(self.source_url)
        self.inputs = Metrics.counter("ingest", "inputs")
        self.rejected = Metrics.counter("ingest", "rejected")

    def process(self, batch):
        items, read_rejects = [], []
        for wi in batch:
            item = WorkItem(*wi)
            try:
                items.append((item, self.source.read(item.key)))
            except (OSError, DataversionError) as e:
                read_rejects.append(
                    {
                        "source": item.key,
                        "reason": "unreadable",
                        "message": f"cannot read object: {e}",
                    }
                )
        out = process_objects(items, self.config)
        rejects = out.rejects + read_rejects
        self.inputs.inc(out.inputs + len(read_rejects))
        self.rejected.inc(len(rejects))
        if out.candidates.num_rows:
            yield out.candidates
        yield beam.pvalue.TaggedOutput(
            AUDIT,
            {
                "objects": len(batch),
                "inputs": out.inputs + len(read_rejects),
                "rejects": rejects,
            },
        )
