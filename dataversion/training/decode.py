"""Decoding a record's payload in the loader's workers: image -> uint8 CHW tensor, audio ->
float32 tensor, text -> str. Torch is needed (the tensors); no torchvision.

- image (`modality == "image"`): Pillow (libjpeg-turbo in its wheel), turned upright by its
  EXIF orientation (`exif_orientation`: JPEG, WebP and PNG, as ingest records it in the
  meta's `exif_orientation` and `width`/`height`), mapped to 8 bits (`to_8bit`), then
  converted to `image_mode` (`to_mode`): default "RGB", so every image has 3 channels and
  batches can stack; "L" for grayscale; None keeps the file's channels: 1 for grey (L, 1-bit,
  16-bit, 32-bit int and float grey), 2 for LA, 3 for RGB and YCbCr, 4 for RGBA and CMYK
  (palette images: RGB, or RGBA with transparency). The tensor is (C, H, W) uint8, a view of
  Pillow's (H, W, C) pixels (no copy; `.contiguous()` before `.view()`); stacking a batch
  makes it contiguous. Pixels are capped by `max_pixels` (a larger image is a decode error,
  never a machine-sized allocation).
- high bit depth and orientation: `dataversion.pixels` (shared with ingest's pHash and
  thumbnails and the report, which must see what the loader serves).
- audio (`modality == "audio"`): soundfile (WAV, FLAC, OGG/Vorbis, MP3 where libsndfile
  has it) -> (channels, frames) float32 in [-1, 1]; with `sample_rate=` resampled by a
  polyphase filter (scipy.signal.resample_poly: deterministic, same bytes on every run) and
  the sample's "sample_rate" says the rate served.
- text: the record's text, a str.

A payload that does not decode raises `RecordDecodeError` naming the record id (the
sample pipeline decides whether to raise or to skip and count).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataversionError
from ..pixels import exif_orientation, orient, to_mode

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold


class RecordDecodeError(DataversionError):
    """A record's payload could not be decoded (the message names the record id)."""

    exit_code = 5


@dataclass(frozen=True)
class DecodeOptions:
    """How `decode_sample` turns payloads into tensors (picklable: it travels to workers)."""

    image_mode: str | None = "RGB"
    sample_rate: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS


# images: orientation, bit depth and mode are `dataversion.pixels` (ingest and the report use them too)


def pil_to_tensor(im: Any) -> Any:
    """An 8-bit Pillow image -> uint8 tensor (C, H, W), a view of its (H, W, C) pixels."""
    import torch

    arr = np.asarray(im)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.dtype != np.uint8:
        raise ValueError(f"image decodes to {arr.dtype} pixels, not 8-bit")
    if not arr.flags.writeable:  # torch wants writable memory; Pillow's is read-only
        arr = arr.copy()
    return torch.from_numpy(arr).permute(2, 0, 1)


def decode_image(data: bytes, *, mode: str | None = "RGB", max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
    """Image bytes -> uint8 tensor (C, H, W), upright (EXIF orientation), in `mode` (module
    docstring). Raises ValueError/OSError for bad bytes."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
        if w * h > max_pixels:
            raise ValueError(f"{w}x{h} image is over the {max_pixels:,}-pixel limit")
        orientation = exif_orientation(im)
        return pil_to_tensor(orient(to_mode(im, mode), orientation))


def decode_audio(data: bytes, *, sample_rate: int | None = None) -> tuple[Any, int]:
    """Audio bytes -> (float32 tensor (channels, frames), sample rate served)."""
    import soundfile
    import torch

    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    x = np.ascontiguousarray(samples.T)
    if sample_rate is not None and int(sample_rate) != rate:
        from scipy.signal import resample_poly

        g = math.gcd(int(sample_rate), int(rate))
        x = resample_poly(x, int(sample_rate) // g, int(rate) // g, axis=1).astype(np.float32, copy=False)
        rate = int(sample_rate)
    return torch.from_numpy(np.ascontiguousarray(x)), int(rate)


def decode_sample(sample: dict[str, Any], opts: DecodeOptions) -> dict[str, Any]:
    """Replace a sample's payload ("data") by its decoded form, by modality, in place.

    image -> sample["image"]; audio -> sample["audio"] and sample["sample_rate"]; text ->
    sample["text"] (already a str; its empty "data" is dropped). Other modalities keep their
    bytes under "data".
    Raises RecordDecodeError naming the record.
    """
    modality = sample.get("modality")
    if modality not in ("image", "audio"):
        if "data" in sample and sample["data"] is None:  # text records: no payload column to carry
            del sample["data"]
        return sample
    data = sample.pop("data", None)
    rid = sample.get("record_id")
    if data is None:
        raise RecordDecodeError(f"record {rid} ({modality}) has no payload to decode (is 'data' among the columns?)")
    try:
        if modality == "image":
            sample["image"] = decode_image(data, mode=opts.image_mode, max_pixels=opts.max_pixels)
        else:
            sample["audio"], sample["sample_rate"] = decode_audio(data, sample_rate=opts.sample_rate)
    except Exception as e:  # noqa: BLE001 - any decoder failure is this record's, reported by id
        raise RecordDecodeError(f"record {rid} ({modality}, {len(data)} bytes) does not decode: "
                                f"{type(e).__name__}: {str(e)[:200]}") from None
    return sample
