"""Porcelain: the operations users call, one module per job, each a function of a `Repo`.

`records` (add, rm), `history` (log, show, ls, diff), `branches` (branches, tags, reset,
reflog, revert), `checkout`, `gc` (roots, reachability, deletion), `verify`. `Repo` binds
them as methods; the CLI is a thin shell over them.
"""
