"""PyTorch integration: a loader pinned to one commit, with exact O(1) resume.

    loader = SnapshotLoader("s3://datasets/web", ref="main", batch_size=256, num_workers=4)
    for epoch in range(start_epoch, 10):
        loader.set_epoch(epoch)
        for batch in loader:          # batch["record_id"]: list of 32-char hex strings
            ...
            save_checkpoint("ckpt.pt", loader=loader, model=model.state_dict())

The order of samples is `dataversion.training.order` (a pure function of commit, seed, epoch); the
loader's state is (commit, seed, epoch, position) where position counts samples consumed
globally. Each DataLoader worker builds whole batches (Arrow `take` on decoded shards) and
sends one batch object per step; workers die with their parent (PR_SET_PDEATHSIG plus a
parent-pid watchdog), so a SIGKILLed trainer leaves no process behind.

Batches are `Batch` dicts: "record_id" (list of hex strings, always present) and one list
per requested column ("text", "label", ... ; "data" as bytes), with attributes `epoch`,
`index` (batch number of this rank in the epoch) and `position` (the global position once
this batch is consumed).

With `decode=True` (and `transform=`, `batch_transform=`) the workers decode payloads and
augment them (`dataversion.training.samples`): batch["image"] a uint8 (B, 3, H, W) tensor
where sizes agree, batch["audio"] float32, batch["text"] strings; see `SnapshotDataset`.

This module is the public face only; the code lives in `dataversion.training` (`dataset`,
`batches`, `loader`, `checkpoint`, `preemption`).
"""

from __future__ import annotations

from .training.batches import Batch
from .training.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .training.dataset import SnapshotDataset
from .training.loader import SnapshotLoader
from .training.preemption import PreemptionHandler

__all__ = [
    "Batch", "SnapshotDataset", "SnapshotLoader", "save_checkpoint", "load_checkpoint", "read_checkpoint",
    "PreemptionHandler",
]
