"""Training integration, one job per module:

- `blocks`: content-tree blocks (id ranges of the trie) the order is built over, and reading
  a block's records through the checked packing: the order never depends on packing.
- `order`: the pure sample order (shuffle, partition over ranks and workers, remainder).
- `batches`: batches built from gathered blocks in one process (`BatchReader`, `Batch`).
- `dataset`: `SnapshotDataset`, the IterableDataset over one commit and its exact state.
- `loader`: `SnapshotLoader`, torch's DataLoader over it, with workers that die with their parent.
- `samples`: the per-batch sample pipeline in the workers (decode, transform, collate, batch_transform).
- `decode`: payload -> tensor (image uint8 CHW, audio float32, text str).
- `randomness`: the transforms' generators, seeded from (seed, epoch, global position) only.
- `transforms`: rng-driven image augmentations (RandomResizedCrop with a fused decode, flips).
- `state`: the loader state's schema and checksum (validated on every load).
- `checkpoint`: save / read / load checkpoints through the store layer (verified on load), recorded in lineage.
- `lineage`: which checkpoint saw which commit and records; pins against gc.
- `preemption`: a preemption notice (SIGTERM) turned into a flag checked at a step boundary.

`blocks`, `order`, `batches`, `state`, `checkpoint`, `lineage`, `randomness` and `preemption` import without torch;
`dataversion.torch` is the public face of the torch-dependent part.
"""
