"""Reading commits from other tools: the `dv://` fsspec filesystem (`dataversion.interop.fsspec`).

`snapshot` is the one module that knows how a commit is packed; the filesystem and the
report build on it.
"""
