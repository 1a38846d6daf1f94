"""Training integration, one job per module:

- `order`: the pure sample order (shuffle, partition over ranks and workers, remainder).
- `batches`: batches built from decoded shards in one process (`BatchReader`, `Batch`).
- `dataset`: `SnapshotDataset`, the IterableDataset over one commit and its exact state.
- `loader`: `SnapshotLoader`, torch's DataLoader over it, with workers that die with their parent.
- `checkpoint`: save / read / load checkpoints through the store layer, recorded in lineage.
- `lineage`: which checkpoint saw which commit and records; pins against gc.
- `preemption`: a preemption notice (SIGTERM) turned into a flag checked at a step boundary.

`order`, `batches`, `checkpoint`, `lineage` and `preemption` import without torch;
`dataversion.torch` is the public face of the torch-dependent part.
"""
