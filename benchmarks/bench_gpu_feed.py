"""Feed a small model on a CUDA device from pinned batches (by hand; skips without CUDA).

    .venv/bin/python benchmarks/bench_gpu_feed.py [--images 4000] [--workers 4] [--batch 128] [--epochs 2]

Generates JPEGs (as bench_loader_media), then trains a small conv net on them with
`SnapshotLoader(decode=True, transform=RandomResizedCrop(224) + flip, pin_memory=True)`,
copying each batch with `.cuda(non_blocking=True)`. Prints samples/s and the GPU's idle
time: CUDA events recorded after each step's last kernel and before the next step's first
one; the GPU time between them is time it waited for data (0 when the loader keeps up,
since the events are then queued back to back). A machine without CUDA prints why it skips
and exits 0 (CI and the development machines have no GPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--draft", action="store_true", help="RandomResizedCrop(draft=True): DCT-scaled JPEG decode")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("bench_gpu_feed: skipped, no CUDA device on this machine "
              f"(torch {torch.__version__}, cuda build {torch.version.cuda})")
        return 0
    import numpy as np
    from bench_loader_media import make_jpegs

    from dataversion import Repo
    from dataversion.records import make_binary_records
    from dataversion.torch import SnapshotLoader
    from dataversion.training.transforms import Compose, RandomHorizontalFlip, RandomResizedCrop

    tmp = tempfile.mkdtemp(prefix="bench-gpu-")
    os.environ["DATAVERSION_CACHE_DIR"] = os.path.join(tmp, "cache")
    payloads = make_jpegs(args.images, np.random.default_rng(0))
    url = "file://" + os.path.join(tmp, "repo")
    Repo.init(url).commit(make_binary_records(payloads, ["image"] * len(payloads),
                                              labels=[str(i % 10) for i in range(len(payloads))]),
                          branch="main", message="gpu feed")
    dev = torch.device("cuda")
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(64, 128, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(128, 10),
    ).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mean = torch.tensor([0.485, 0.456, 0.406], device=dev).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225], device=dev).view(1, 3, 1, 1) * 255
    aug = Compose([RandomResizedCrop(224, draft=args.draft), RandomHorizontalFlip()])
    loader = SnapshotLoader(url, batch_size=args.batch, num_workers=args.workers, decode=True, transform=aug,
                            columns=["label"], pin_memory=True, prefetch_factor=4)
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        ends, starts, n, pinned = [], [], 0, True
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for batch in loader:
            pinned &= batch["image"].is_pinned()
            start = torch.cuda.Event(enable_timing=True)
            start.record()
            x = batch["image"].to(dev, non_blocking=True).float().sub_(mean).div_(std)
            x = x.contiguous(memory_format=torch.channels_last)
            y = torch.tensor([int(v) for v in batch["label"]]).to(dev, non_blocking=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            starts.append(start)
            ends.append(end)
            n += x.shape[0]
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        idle_ms = sum(ends[i].elapsed_time(starts[i + 1]) for i in range(len(starts) - 1))
        busy_ms = sum(s.elapsed_time(e) for s, e in zip(starts, ends))
        print(f"epoch {epoch}: {n / dt:,.0f} samples/s ({n} in {dt:.1f} s), GPU busy {busy_ms / 1000:.2f} s, "
              f"idle between steps {idle_ms / 1000:.2f} s ({idle_ms / (idle_ms + busy_ms):.0%}), "
              f"batches pinned: {pinned}, {args.workers} workers, draft={args.draft}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
