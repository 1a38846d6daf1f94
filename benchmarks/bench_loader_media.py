"""Image and audio loading with decode + augmentation, side by side in one run (by hand).

    .venv/bin/python benchmarks/bench_loader_media.py [--images 4000] [--clips 4000] [--workers 2] [--batch 128] [--rounds 3] [--peer-python PY]

Generates ImageNet-like JPEGs (sizes 320-640 px a side, smooth content + noise, quality 90,
~30-80 KB) and ~16 kHz mono FLAC clips (1-3 s), stores the same bytes for every loader, and
times one shuffled epoch each with `--workers` worker processes and the same per-sample work:

- images: decode (Pillow) -> RandomResizedCrop(224) on the Pillow image -> RandomHorizontalFlip
  -> uint8 CHW tensor, stacked into (B, 3, 224, 224) (`dataversion.training.transforms`, used
  by all); one more dataversion row with `RandomResizedCrop(224, draft=True)` (JPEG decoded
  at a reduced DCT scale when the crop allows: other pixels, so reported apart);
- audio: decode (soundfile) -> float32 -> a random 1 s crop (zero-padded) and a random gain,
  stacked into (B, 1, 16000).

Loaders: dataversion `SnapshotLoader(decode=True, transform=...)`; Hugging Face `datasets`
map-style (save_to_disk / load_from_disk, `set_transform`) + torchdata `StatefulDataLoader`;
litdata `StreamingDataset` + `StreamingDataLoader` (data written by `litdata.optimize`);
MosaicML Streaming where it imports (its import needs torchvision: skipped with the reason
otherwise); and a bare loop in this one process (read file, decode, same transform, stack),
which is the per-core reference. Peak RSS is sampled over the process tree. Every loader runs
once per round, rounds interleaved (`--rounds`, 3): the median round is shown, with each rate.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from bench_loader import PeakRSS, in_child, run_child  # noqa: E402

from dataversion import Repo  # noqa: E402
from dataversion.records import make_binary_records  # noqa: E402
from dataversion.training.transforms import Compose, RandomHorizontalFlip, RandomResizedCrop  # noqa: E402

CROP = 224
CLIP = 16000


# --------------------------------------------------------------------------- the same work for all
IMAGE_AUG = Compose([RandomResizedCrop(CROP), RandomHorizontalFlip()])
IMAGE_AUG_DRAFT = Compose([RandomResizedCrop(CROP, draft=True), RandomHorizontalFlip()])
_FLIP = RandomHorizontalFlip()


class AudioAug:
    """A random 1 s crop (zero-padded when shorter) and a random gain in [0.5, 1.5]."""

    def __call__(self, sample: dict, rng) -> dict:
        import torch

        x = sample["audio"][:1]
        n = x.shape[1]
        if n >= CLIP:
            start = int(torch.randint(0, n - CLIP + 1, (1,), generator=rng))
            x = x[:, start : start + CLIP]
        else:
            x = torch.nn.functional.pad(x, (0, CLIP - n))
        gain = 0.5 + float(torch.rand((), generator=rng))
        sample["audio"] = x * gain
        return sample


AUDIO_AUG = AudioAug()


def decode_image_sample(data: bytes, rng) -> dict:
    """What a user of any loader writes: Pillow decode, crop + resize on the Pillow image (as
    torchvision does on a PIL input), flip, to tensor (the same as dataversion's fused path)."""
    return _FLIP({"image": IMAGE_AUG.transforms[0].decode_crop(data, rng)}, rng)


def decode_audio_sample(data: bytes, rng) -> dict:
    from dataversion.training.decode import decode_audio

    audio, rate = decode_audio(data)
    return AUDIO_AUG({"audio": audio, "sample_rate": rate}, rng)


def _gen(i: int):
    import torch

    g = torch.Generator()
    g.manual_seed(i)
    return g


# --------------------------------------------------------------------------- data
def make_jpegs(n: int, rng: np.random.Generator) -> list[bytes]:
    from PIL import Image

    out = []
    for _ in range(n):
        w, h = int(rng.integers(320, 641)), int(rng.integers(320, 641))
        small = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        arr = np.asarray(small).astype(np.int16) + rng.integers(-12, 13, (h, w, 3), dtype=np.int16)
        b = io.BytesIO()
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(b, "JPEG", quality=90)
        out.append(b.getvalue())
    return out


def make_clips(n: int, rng: np.random.Generator) -> list[bytes]:
    import soundfile

    out = []
    t = np.arange(3 * 16000) / 16000
    for _ in range(n):
        frames = int(rng.integers(16000, 48001))
        f = float(rng.uniform(100, 2000))
        x = 0.3 * np.sin(2 * math.pi * f * t[:frames]) + 0.05 * rng.standard_normal(frames)
        b = io.BytesIO()
        soundfile.write(b, x.astype(np.float32), 16000, format="FLAC", subtype="PCM_16")
        out.append(b.getvalue())
    return out


# --------------------------------------------------------------------------- timing
def epoch(make_iter, key: str, n_expected: int) -> dict:
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        first, count = None, 0
        for batch in make_iter():
            if first is None:
                first = time.perf_counter() - t0
            x = batch[key]
            assert x.shape[1:] in ((3, CROP, CROP), (1, CLIP)), x.shape
            count += x.shape[0]
        dt = time.perf_counter() - t0
    assert count >= n_expected * 0.99, (count, n_expected)
    return {"samples": count, "seconds": round(dt, 2), "samples_per_s": round(count / dt, 1),
            "first_batch_s": round(first or 0, 3), "peak_rss_mb": round(mem.peak / 2**20),
            "peak_pss_mb": round(mem.peak_pss / 2**20), "peak_pss_parent_mb": round(mem.peak_pss_parent / 2**20),
            "peak_pss_workers_mb": round(mem.peak_pss_children / 2**20)}


def run_dataversion(url: str, kind: str, n: int, workers: int, batch: int, draft: bool = False) -> dict:
    from dataversion.torch import SnapshotLoader

    key = "image" if kind == "image" else "audio"
    tf = (IMAGE_AUG_DRAFT if draft else IMAGE_AUG) if kind == "image" else AUDIO_AUG

    def it():
        return iter(SnapshotLoader(url, batch_size=batch, num_workers=workers, shuffle=True, seed=0,
                                   columns=["label"], decode=True, transform=tf, window=4096))

    return epoch(it, key, n)


class _HFTransform:
    def __init__(self, kind: str):
        self.kind = kind

    def __call__(self, b: dict) -> dict:
        fn = decode_image_sample if self.kind == "image" else decode_audio_sample
        key = "image" if self.kind == "image" else "audio"
        outs = [fn(d, _gen(random.getrandbits(62)))[key] for d in b["data"]]
        return {key: outs, "label": b["label"]}


def run_hf(files: list[str], kind: str, tmp: str, n: int, workers: int, batch: int) -> dict:
    import datasets
    from torchdata.stateful_dataloader import StatefulDataLoader

    datasets.disable_progress_bars()
    path = os.path.join(tmp, f"hf-{kind}")
    if not os.path.exists(path):
        payloads = [open(f, "rb").read() for f in files]
        feats = datasets.Features({"data": datasets.Value("binary"), "label": datasets.Value("int64")})
        datasets.Dataset.from_dict({"data": payloads, "label": [i % 10 for i in range(len(payloads))]},
                                   features=feats).save_to_disk(path)
    ds = datasets.load_from_disk(path)
    ds.set_transform(_HFTransform(kind))
    key = "image" if kind == "image" else "audio"
    return epoch(lambda: iter(StatefulDataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers)), key, n)


def _litdata_item(path: str) -> dict:
    with open(path, "rb") as f:
        return {"data": f.read(), "label": 0}


def _augmented_item(kind: str, item: dict) -> dict:
    fn = decode_image_sample if kind == "image" else decode_audio_sample
    key = "image" if kind == "image" else "audio"
    return {key: fn(item["data"], _gen(random.getrandbits(62)))[key]}


try:  # module level, so that it pickles into litdata's workers
    import litdata as _litdata

    class LitAugmented(_litdata.StreamingDataset):
        """litdata's dataset with the same decode + augmentation per item."""

        def __init__(self, kind: str, *a, **kw):
            super().__init__(*a, **kw)
            self.kind = kind

        def __getitem__(self, index):
            return _augmented_item(self.kind, super().__getitem__(index))
except ImportError:
    LitAugmented = None


def run_litdata(files: list[str], kind: str, tmp: str, n: int, workers: int, batch: int) -> dict:
    import litdata as ld

    out_dir = os.path.join(tmp, f"litdata-{kind}")
    prep = 0.0
    if not os.path.exists(out_dir):
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # its progress lines would spoil --json
            ld.optimize(fn=_litdata_item, inputs=files, output_dir=out_dir, chunk_bytes="64MB", num_workers=1,
                        start_method="fork")  # its default sets spawn process-wide, for every later loader
        prep = time.perf_counter() - t0
    key = "image" if kind == "image" else "audio"

    def it():
        ds = LitAugmented(kind, out_dir, shuffle=True, seed=0)
        return iter(ld.StreamingDataLoader(ds, batch_size=batch, num_workers=workers))

    r = epoch(it, key, n)
    r["optimize_s"] = round(prep, 1)
    return r


def run_mosaic(files: list[str], kind: str, tmp: str, n: int, workers: int, batch: int) -> dict:
    try:
        import streaming  # noqa: F401  (imports torchvision)
    except Exception as e:  # noqa: BLE001 - any import failure means: not measurable here
        return {"skipped": f"mosaicml-streaming does not import here: {type(e).__name__}: {str(e)[:120]}"}
    from streaming import MDSWriter, StreamingDataset
    from torch.utils.data import DataLoader

    out_dir = os.path.join(tmp, f"mds-{kind}")
    if not os.path.exists(out_dir):
        with MDSWriter(out=out_dir, columns={"data": "bytes", "label": "int"}) as w:
            for p in files:
                with open(p, "rb") as f:
                    w.write({"data": f.read(), "label": 0})
    key = "image" if kind == "image" else "audio"

    class Augmented(StreamingDataset):
        def __getitem__(self, index):
            return _augmented_item(kind, super().__getitem__(index))

    def it():
        ds = Augmented(local=out_dir, shuffle=True, batch_size=batch)
        return iter(DataLoader(ds, batch_size=batch, num_workers=workers))

    return epoch(it, key, n)


def run_bare(files: list[str], kind: str, n: int, batch: int) -> dict:
    import torch

    fn = decode_image_sample if kind == "image" else decode_audio_sample
    key = "image" if kind == "image" else "audio"

    def it():
        order = list(range(len(files)))
        random.Random(0).shuffle(order)
        for s in range(0, len(order), batch):
            items = []
            for i in order[s : s + batch]:
                with open(files[i], "rb") as f:
                    items.append(fn(f.read(), _gen(i))[key])
            yield {key: torch.stack(items)}

    return epoch(it, key, n)


# --------------------------------------------------------------------------- main
def _in_child(fn, *args, python: str | None = None) -> dict:
    """fn(*args) in a fresh process: spawned from this interpreter, or run by `python`
    (a peer's own environment: `--peer-python`), answering one JSON line."""
    if python is None:
        return in_child(fn, *args, torch_threads=1)
    import subprocess

    spec = json.dumps({"fn": fn.__name__, "args": list(args)})  # on stdin: thousands of paths
    proc = subprocess.run([python, os.path.abspath(__file__), "--child", "-"], input=spec, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        return {"skipped": f"{python} failed: {proc.stderr.strip().splitlines()[-1:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mosaic_python(args) -> str | None:
    """MosaicML Streaming imports torchvision, which does not import beside the CPU torch of
    our venv: with `--peer-python`, it runs in that interpreter's environment instead."""
    try:
        import streaming  # noqa: F401
        return None
    except Exception:  # noqa: BLE001 - any import failure: use the peer's environment if given
        return args.peer_python


def bench_kind(kind: str, payloads: list[bytes], tmp: str, args, results: dict) -> None:
    n = len(payloads)
    ext = ".jpg" if kind == "image" else ".flac"
    d = os.path.join(tmp, f"files-{kind}")
    os.makedirs(d, exist_ok=True)
    files = []
    for i, p in enumerate(payloads):
        files.append(os.path.join(d, f"{i:06d}{ext}"))
        with open(files[-1], "wb") as f:
            f.write(p)
    url = "file://" + os.path.join(tmp, f"repo-{kind}")
    Repo.init(url).commit(make_binary_records(payloads, [kind] * n, labels=[str(i % 10) for i in range(n)]),
                          branch="main", message=kind)
    os.environ["DATAVERSION_CACHE_DIR"] = os.path.join(tmp, f"cache-{kind}")
    r: dict = {"records": n, "mean_kb": round(sum(map(len, payloads)) / n / 1024, 1)}
    del payloads  # the loaders' processes read the files or the repository
    w, b = args.workers, args.batch
    # each epoch in a fresh process: no loader inherits another's imports and allocations,
    # so the memory peaks are each loader's own (and none holds the generated payloads)
    r["dataversion_cold"] = _in_child(run_dataversion, url, kind, n, w, b)
    runners = {
        "dataversion": lambda: _in_child(run_dataversion, url, kind, n, w, b),
        **({"dataversion_draft_decode": lambda: _in_child(run_dataversion, url, kind, n, w, b, True)} if kind == "image" else {}),
        "hf_datasets_stateful": lambda: _in_child(run_hf, files, kind, tmp, n, w, b),
        "litdata": lambda: _in_child(run_litdata, files, kind, tmp, n, w, b),
        "mosaicml_streaming": lambda: _in_child(run_mosaic, files, kind, tmp, n, w, b, python=_mosaic_python(args)),
        "bare_loop_1_process": lambda: _in_child(run_bare, files, kind, n, b),
    }
    runs: dict[str, list[dict]] = {name: [] for name in runners}
    for round_ in range(args.rounds):  # interleaved: every loader once per round
        for name, fn in runners.items():
            if runs[name] and "skipped" in runs[name][0]:
                continue
            try:
                got = fn()
            except ImportError as e:
                got = {"skipped": f"not installed: {e}"}
            runs[name].append(got)
            print(f"  {kind} round {round_ + 1} {name}: {got}", file=sys.stderr, flush=True)
    for name, got in runs.items():
        timed = sorted((g for g in got if "samples_per_s" in g), key=lambda g: g["samples_per_s"])
        # the median round's figures (memory included), and every round's rate
        r[name] = {**timed[len(timed) // 2], "rounds": [g["samples_per_s"] for g in got]} if timed else got[0]
    peers = [r[k]["samples_per_s"] for k in ("hf_datasets_stateful", "litdata", "mosaicml_streaming") if "samples_per_s" in r[k]]
    dv = r["dataversion"]["samples_per_s"]
    if peers:
        r["ratio_vs_fastest_peer"] = round(dv / max(peers), 2)
    r["ratio_per_core_vs_bare"] = round(dv / w / r["bare_loop_1_process"]["samples_per_s"], 2)
    results[kind] = r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--clips", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is shown")
    ap.add_argument("--only", choices=["image", "audio"], default=None)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--peer-python", default=None,
                    help="a Python whose environment has mosaicml-streaming (it needs torchvision), for that peer")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # one loader's epoch for a parent run (`_in_child` with a peer's python)
        spec = json.loads(sys.stdin.read() if args.child == "-" else args.child)
        print(json.dumps(run_child(globals()[spec["fn"]], spec["args"], torch_threads=1)))
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="bench-media-")
    rng = np.random.default_rng(0)
    results: dict = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}, "
                   f"load {os.getloadavg()[0]:.1f} at start",
        "date": time.strftime("%Y-%m-%d"), "workers": args.workers, "batch": args.batch,
    }
    try:
        if args.only in (None, "image"):
            bench_kind("image", make_jpegs(args.images, rng), tmp, args, results)
        if args.only in (None, "audio"):
            bench_kind("audio", make_clips(args.clips, rng), tmp, args, results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{results['machine']}, {results['date']}: {args.workers} workers, batch {args.batch}, shuffled")
    for kind in ("image", "audio"):
        if kind not in results:
            continue
        r = results[kind]
        print(f"{kind}: {r['records']} records, mean {r['mean_kb']} KB")
        for name in ("dataversion_cold", "dataversion", "dataversion_draft_decode", "hf_datasets_stateful", "litdata",
                     "mosaicml_streaming", "bare_loop_1_process"):
            if name not in r:
                continue
            x = r[name]
            if "skipped" in x:
                print(f"  {name:24s} skipped: {x['skipped']}")
            else:
                rounds = "/".join(f"{v:,.0f}" for v in x.get("rounds", []))
                print(f"  {name:24s} {x['samples_per_s']:>9,.1f} samples/s  first batch {x['first_batch_s']:.2f} s  "
                      f"peak RSS {x['peak_rss_mb']} MB  PSS {x['peak_pss_mb']} MB"
                      f" (parent {x['peak_pss_parent_mb']}, workers {x['peak_pss_workers_mb']})"
                      + (f"  rounds {rounds}" if len(x.get("rounds", [])) > 1 else ""))
        print(f"  dataversion / fastest peer: {r.get('ratio_vs_fastest_peer')}x   "
              f"per core / bare loop: {r['ratio_per_core_vs_bare']}x")


if __name__ == "__main__":
    main()
