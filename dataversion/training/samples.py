"""The sample pipeline a worker runs on each batch: rows -> sample dicts -> decode ->
`transform(sample, rng)` -> collate -> `batch_transform(batch, rng)`.

Runs where the batch is built (a DataLoader worker), so decoding and augmentation use every
worker; the main process only receives tensors (through torch's shared memory).

Collation policy (`collate`), key by key over the batch's samples:
- tensors (or numpy arrays) of one shape and dtype -> one stacked tensor (N, ...);
- tensors of different shapes (images of different sizes, clips of different lengths) -> a
  list of tensors, left as they are: crop/resize in `transform`, or pad in
  `batch_transform`, to get one tensor;
- all bool -> a bool tensor; all int -> int64; ints and floats -> float32;
- anything else (record ids, labels, text, None) -> a list;
- a key some samples lack -> a list with None where it is missing.

A record whose payload does not decode raises `RecordDecodeError` naming its id
(`on_decode_error="raise"`, the default) or is left out of its batch and its id listed in
`batch.skipped` (`"skip"`; the loader counts them in `decode_skipped`). Skipped records
still count as consumed: positions, and so resume, are unchanged. A batch none of whose
records is left (every one skipped) still has `record_id` and the other columns its rows
were read with, each an empty list (the collation of no values; "data" not, when decoding,
nor what decoding would have added: "image", "audio", "sample_rate"), and
`batch_transform` is not called on it (nor on any batch without samples).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import BadInputError
from ..records import ids_as_numpy
from .batches import Batch, RawBatch
from .decode import DecodeOptions, RecordDecodeError, decode_sample
from .randomness import batch_generator, sample_generator

ON_DECODE_ERROR = ("raise", "skip")

Transform = Callable[[dict[str, Any], Any], dict[str, Any]]


def collate(samples: list[dict[str, Any]]) -> Batch:
    """Sample dicts -> one `Batch` by the policy in the module docstring."""
    import torch

    keys: dict[str, None] = {}
    for s in samples:
        keys.update(dict.fromkeys(s))
    out = Batch()
    for k in keys:
        values = [s.get(k) for s in samples]
        out[k] = _collate_values(values, torch)
    return out


def _collate_values(values: list[Any], torch: Any) -> Any:
    if not values:
        return []
    first = values[0]
    if isinstance(first, np.ndarray) and all(isinstance(v, np.ndarray) for v in values):
        values = [torch.from_numpy(np.ascontiguousarray(v)) for v in values]
        first = values[0]
    if isinstance(first, torch.Tensor):
        if all(isinstance(v, torch.Tensor) and v.shape == first.shape and v.dtype == first.dtype for v in values):
            return _stack(values, torch)
        return list(values)
    if all(type(v) is bool for v in values):
        return torch.tensor(values, dtype=torch.bool)
    if all(type(v) is int for v in values):
        try:
            return torch.tensor(values, dtype=torch.int64)
        except RuntimeError:  # beyond int64: keep the Python ints
            return list(values)
    if all(type(v) in (int, float) for v in values):
        return torch.tensor(values, dtype=torch.float32)
    return list(values)


def _stack(values: list[Any], torch: Any) -> Any:
    """torch.stack of same-shaped tensors; in a DataLoader worker, straight into shared
    memory (as torch's default_collate does): a batch sent to the parent is otherwise copied
    into a new shared-memory segment when it is pickled (8-19 MB per batch of audio clips
    or 224 px images)."""
    from torch.utils.data import get_worker_info

    first = values[0]
    if get_worker_info() is None or first.device.type != "cpu":
        return torch.stack(values)
    storage = first._typed_storage()._new_shared(len(values) * first.numel(), device=first.device)
    out = first.new(storage).resize_(len(values), *first.shape)
    return torch.stack(values, out=out)


class DecodedBatch:
    """What a worker sends when the sample pipeline runs: a finished `Batch` (tensors) and,
    with features joined, its rows' features block (`RawBatch.fblock`). Duck-types
    `RawBatch` for the loader (`to_batch`, `fblock`) and pins its tensors for torch's
    pin-memory thread (`pin_memory`)."""

    __slots__ = ("batch", "fblock")

    def __init__(self, batch: Batch, fblock: np.ndarray | None = None):
        self.batch, self.fblock = batch, fblock

    def __reduce__(self):
        return (_rebuild, (dict(self.batch), self.batch.epoch, self.batch.index, self.batch.position,
                           self.batch.skipped, self.fblock))

    def to_batch(self, fmt: str) -> Batch:
        return self.batch

    def pin_memory(self, device: Any = None) -> DecodedBatch:
        """Pin every tensor (in lists too) in page-locked memory; a no-op without an accelerator
        (torch's DataLoader only calls this when one is there)."""
        import torch

        if not torch.accelerator.is_available():
            return self

        def pin(v: Any) -> Any:
            if isinstance(v, torch.Tensor):
                return v.pin_memory()
            if isinstance(v, list) and v and isinstance(v[0], torch.Tensor):
                return [pin(x) for x in v]
            return v

        for k, v in list(self.batch.items()):
            self.batch[k] = pin(v)
        return self


def _rebuild(items: dict, epoch: int, index: int, position: int, skipped: tuple, fblock: Any) -> DecodedBatch:
    b = Batch(items)
    b.epoch, b.index, b.position, b.skipped = epoch, index, position, tuple(skipped)
    return DecodedBatch(b, fblock)


class SamplePipeline:
    """Decode + transform + collate + batch_transform, configured once, run per batch.

    Picklable (it travels to the workers inside the dataset): the transforms must be too
    (module-level functions or callable objects, as for any DataLoader worker).
    """

    def __init__(self, *, decode: bool, transform: Transform | None, batch_transform: Transform | None,
                 options: DecodeOptions, on_decode_error: str = "raise"):
        if on_decode_error not in ON_DECODE_ERROR:
            raise BadInputError(f"on_decode_error must be one of {ON_DECODE_ERROR}, not {on_decode_error!r}")
        for name, fn in (("transform", transform), ("batch_transform", batch_transform)):
            if fn is not None and not callable(fn):
                raise BadInputError(f"{name} must be callable as {name}(dict, torch.Generator) -> dict")
        self.decode, self.transform, self.batch_transform = bool(decode), transform, batch_transform
        self.options, self.on_decode_error = options, on_decode_error
        # fused decode (transforms.RandomResizedCrop first): crop straight from the decoded image
        self.fused, self.after_fused = None, transform
        if decode and hasattr(transform, "split_fused"):
            self.fused, self.after_fused = transform.split_fused()

    def _decode(self, sample: dict[str, Any], rng: Any) -> dict[str, Any]:
        """decode_sample, or for an image with a fused crop, the crop's own decode."""
        if self.fused is None or sample.get("modality") != "image" or sample.get("data") is None:
            return decode_sample(sample, self.options)
        data = sample.pop("data")
        try:
            sample["image"] = self.fused.decode_crop(data, rng, self.options.image_mode, self.options.max_pixels)
        except Exception as e:  # noqa: BLE001 - any decoder failure is this record's, reported by id
            raise RecordDecodeError(f"record {sample.get('record_id')} (image, {len(data)} bytes) does not decode: "
                                    f"{type(e).__name__}: {str(e)[:200]}") from None
        return sample

    def samples(self, raw: RawBatch) -> list[dict[str, Any]]:
        """The batch's rows as sample dicts (record_id as a hex string)."""
        t = raw.table
        hexed = ids_as_numpy(t.column(0)).tobytes().hex()
        ids = [hexed[k : k + 32] for k in range(0, len(hexed), 32)]
        names = t.schema.names[1:]
        cols = [c.to_pylist() for c in t.columns[1:]]
        return [{"record_id": rid, **{n: col[j] for n, col in zip(names, cols)}} for j, rid in enumerate(ids)]

    def empty_batch(self, raw: RawBatch) -> Batch:
        """The batch of a raw batch without samples left (module docstring): record_id and
        each column read, empty lists; "data" only when not decoding."""
        names = [n for n in raw.table.schema.names[1:] if not (self.decode and n == "data")]
        return Batch({"record_id": [], **{n: [] for n in names}})

    def run(self, raw: RawBatch, positions: np.ndarray, seed: int) -> DecodedBatch:
        """One batch through the pipeline; `positions` are its samples' global positions."""
        out: list[dict[str, Any]] = []
        skipped: list[str] = []
        kept: list[int] = []
        for j, (sample, pos) in enumerate(zip(self.samples(raw), positions.tolist(), strict=True)):
            rng = sample_generator(seed, raw.epoch, pos) if self.transform is not None else None
            transform = self.transform
            if self.decode:
                fused = self.fused is not None and sample.get("modality") == "image"
                try:
                    sample = self._decode(sample, rng)
                except RecordDecodeError:
                    if self.on_decode_error == "raise":
                        raise
                    skipped.append(sample["record_id"])
                    continue
                if fused:
                    transform = self.after_fused
            if transform is not None:
                sample = transform(sample, rng)
                if not isinstance(sample, dict):
                    raise TypeError(f"transform returned {type(sample).__name__}, not the sample dict")
            out.append(sample)
            kept.append(j)
        batch = collate(out) if out else self.empty_batch(raw)
        if self.batch_transform is not None and out:
            result = self.batch_transform(batch, batch_generator(seed, raw.epoch, int(positions[0])))
            if not isinstance(result, dict):
                raise TypeError(f"batch_transform returned {type(result).__name__}, not the batch dict")
            batch = result if isinstance(result, Batch) else Batch(result)
        batch.epoch, batch.index, batch.position, batch.skipped = raw.epoch, raw.index, raw.position, tuple(skipped)
        fblock = raw.fblock
        if fblock is not None and skipped:  # the features rows of the samples kept
            fblock = np.take(fblock, np.asarray(kept, dtype=np.int64), axis=0)
        return DecodedBatch(batch, fblock)
