"""Python's cyclic garbage collector paused around a batch step.

A batch step (`process.process_objects`, MinHash rows) allocates tens of thousands of small
containers that all survive the step (rows, tuples, lists of the batch). Each 700 such
allocations start a collection, and survivors soon trigger a full one that visits every
live object of the process: in a Beam worker (its SDK imports alone are ~150,000 objects)
that was ~10 us per ingested document, a third of the step. The batch's own objects are
freed by reference counting as usual; a cycle made meanwhile waits for the next collection
after the step.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic collection inside the block (restored as it was, even on error)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()
