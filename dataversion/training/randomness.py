"""Resumable randomness: the `torch.Generator` a transform gets is a pure function of
(seed, epoch, global position of the sample), so a resumed run (any num_workers, any world
size) draws exactly the augmentations the uninterrupted run drew.

Nothing else feeds it: not the worker id, not the process, not the time, not how many
samples this worker saw. A batch transform's generator is seeded from (seed, epoch, the
global position of the batch's first sample) with its own tag, so it never equals a
sample's. torchvision-style transforms that draw from torch's global RNG run under
`global_rng(rng)`:

    def transform(sample, rng):
        with global_rng(rng):
            sample["image"] = tv_transforms(sample["image"])   # torchvision.transforms.v2
        return sample
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
from collections.abc import Iterator
from typing import Any

_TAG_SAMPLE = 1
_TAG_BATCH = 2
_MASK64 = (1 << 64) - 1


def derived_seed(seed: int, epoch: int, position: int, tag: int = _TAG_SAMPLE) -> int:
    """A 63-bit seed from (seed, epoch, position, tag): blake2b of their 64-bit encodings,
    the same on every machine and version."""
    raw = struct.pack("<QQQQ", int(seed) & _MASK64, int(epoch) & _MASK64, int(position) & _MASK64, tag)
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little") >> 1


def sample_generator(seed: int, epoch: int, position: int) -> Any:
    """The generator of the sample at `position` of `epoch` (a fresh torch.Generator, CPU)."""
    import torch

    g = torch.Generator()
    g.manual_seed(derived_seed(seed, epoch, position, _TAG_SAMPLE))
    return g


def batch_generator(seed: int, epoch: int, first_position: int) -> Any:
    """The generator of a batch transform, for the batch whose first sample is at `first_position`."""
    import torch

    g = torch.Generator()
    g.manual_seed(derived_seed(seed, epoch, first_position, _TAG_BATCH))
    return g


@contextlib.contextmanager
def global_rng(rng: Any) -> Iterator[None]:
    """Run code that draws from torch's global RNG (torchvision transforms) seeded from `rng`;
    the global state is restored afterwards."""
    import torch

    seed = int(torch.randint(0, 1 << 62, (1,), generator=rng).item())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
