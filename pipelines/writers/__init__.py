"""Writers: the pipeline steps that put results into the repository's store (shards and
their features, the run's small results for the driver)."""
