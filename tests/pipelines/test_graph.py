"""The ingestion graph: no step whose input is the whole run (no global combine, side
input or broadcast), and only the primitives beam-pyspark-runner translates."""

import apache_beam as beam
from apache_beam.pipeline import PipelineVisitor

from pipelines.config import IngestConfig
from pipelines.graph import build_pipeline


class _Collect(PipelineVisitor):
    def __init__(self):
        self.leaves, self.composites = [], []

    def visit_transform(self, node):
        self.leaves.append(node)

    def enter_composite_transform(self, node):
        self.composites.append(node)


def test_graph_has_no_global_step_and_only_portable_primitives():
    p = beam.Pipeline()
    build_pipeline(
        p,
        source_url="/nonexistent",
        repo_url="file:///nonexistent",
        pieces=3,
        config=IngestConfig(),
        parent=None,
        scratch="tmp/ingest/x/",
        partitions=4,
    )
    v = _Collect()
    p.visit(v)
    # Create's own expansion (a Reshuffle of its few piece numbers) is replaced whole by
    # runners that translate Create (beam-pyspark-runner does)
    v.leaves = [n for n in v.leaves if not n.full_label.startswith("ListingPieces/")]
    v.composites = [n for n in v.composites if not n.full_label.startswith("ListingPieces/")]
    names = {type(n.transform).__name__ for n in v.leaves + v.composites if n.transform}
    for banned in ("CombineGlobally", "ToList", "Reshuffle", "BatchElements", "CombinePerKey"):
        assert banned not in names
    assert all(not n.side_inputs for n in v.leaves)
    prims = {type(n.transform).__name__ for n in v.leaves if n.transform}
    assert prims <= {
        "Impulse",
        "ParDo",
        "Flatten",
        "GroupByKey",
        "_GroupByKeyOnly",
        "_GroupAlsoByWindow",
        "_ReifyWindows",
        "Create",
        "Read",
    }, prims
    # the label propagation rounds are bounded by the config
    rounds = [n for n in v.leaves + v.composites if n.full_label.startswith("Propagate")]
    assert len(rounds) == IngestConfig().dedup.max_rounds
