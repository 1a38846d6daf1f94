"""Training integration: the pure sample order, lineage, preemption, and (with torch) the loader.

`order`, `lineage` and `preemption` import without torch; `dataversion.torch` is the face of
the torch-dependent part (dataset, loader, checkpoints).
"""
