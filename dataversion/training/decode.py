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
- high bit depth (`to_8bit`, shared with ingest's pHash and thumbnails, which must see what
  the loader serves): 16-bit (I;16*) >> 8; 32-bit int (I) clipped to 0..65535 then >> 8
  (read as 16-bit samples, as Pillow opens 16-bit files); float (F): values taken as 0..1
  when the largest finite one is <= 1, else divided by it, clipped to 0..1, times 255
  rounded to nearest (NaN and -inf -> 0, +inf -> 255). A pure function of the pixels:
  Pillow's own convert("L"/"RGB") clips these at 255 (a 16-bit picture turns white).
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


# ---- images: orientation, bit depth, mode (Pillow only, no torch; ingest uses them too) ----

ORIENTATION_TAG = 0x0112
# EXIF orientation -> the `PIL.Image.Transpose` that turns the stored pixels upright
TRANSPOSE = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}
# the Pillow formats whose EXIF orientation is applied (MPO: a JPEG with more pictures)
ORIENTED_FORMATS = ("JPEG", "MPO", "WEBP", "PNG")
# image_mode=None: the 8-bit modes served as they are
KEPT_MODES = ("L", "LA", "RGB", "RGBA", "CMYK", "YCbCr")


def exif_orientation(im: Any) -> int:
    """The EXIF orientation (1..8, 1 = upright) of an opened Pillow image of a format in
    `ORIENTED_FORMATS`; 1 for other formats, no or a broken EXIF block, or a value out of
    range. Reads the header only, except for a PNG whose eXIf chunk may follow its pixels
    (then the image is loaded), so a JPEG can still be drafted afterwards."""
    if im.format not in ORIENTED_FORMATS:
        return 1
    if "exif" not in im.info and im.format == "PNG":
        im.load()
    if "exif" not in im.info:
        return 1
    try:
        o = int(im.getexif().get(ORIENTATION_TAG, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is ignored, not fatal
        return 1
    return o if o in TRANSPOSE else 1


def orient(im: Any, orientation: int) -> Any:
    """`im` turned upright for an EXIF `orientation` (the same pixels as
    `PIL.ImageOps.exif_transpose`, without touching the metadata)."""
    if orientation not in TRANSPOSE:
        return im
    from PIL import Image

    return im.transpose(getattr(Image.Transpose, TRANSPOSE[orientation]))


def oriented_size(w: int, h: int, orientation: int) -> tuple[int, int]:
    """(width, height) once `orientation` is applied (5..8 swap them)."""
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def to_8bit(im: Any) -> Any:
    """A high-bit-depth grey image (modes I;16*, I, F) as the 8-bit "L" image a viewer
    shows (the mapping of the module docstring; "LA" when a 16-bit image's `transparency`
    value marks transparent pixels); any other image unchanged (the same object)."""
    mode = im.mode
    if not (mode == "I" or mode == "F" or mode.startswith("I;16")):
        return im
    from PIL import Image

    a = np.asarray(im)
    if mode == "F":
        f = a.astype(np.float64)
        finite = np.isfinite(f)
        top = float(f[finite].max()) if finite.any() else 0.0
        scale = top if top > 1.0 else 1.0
        f[np.isnan(f)] = 0.0
        g = np.rint(np.clip(f / scale, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif a.dtype.kind == "u" and a.dtype.itemsize == 2:
        g = (a >> 8).astype(np.uint8)
    else:
        g = (np.clip(a, 0, 65535) >> 8).astype(np.uint8)
    t = im.info.get("transparency")
    if mode != "F" and isinstance(t, int) and not isinstance(t, bool):
        alpha = np.where(a == t, 0, 255).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(np.stack([g, alpha], axis=-1)), "LA")
    return Image.fromarray(np.ascontiguousarray(g), "L")


def to_mode(im: Any, mode: str | None) -> Any:
    """An opened image in the 8-bit mode decode serves for `image_mode` (module docstring):
    `to_8bit`, then converted to `mode`, or with None kept when in `KEPT_MODES`, else to
    L (1-bit), LA, RGBA (alpha or transparency) or RGB."""
    im = to_8bit(im)
    if mode is not None:
        return im if im.mode == mode else im.convert(mode)
    if im.mode in KEPT_MODES:
        return im
    if im.mode == "1":
        return im.convert("L")
    if im.mode == "La":
        return im.convert("LA")
    alpha = "A" in im.getbands() or "a" in im.getbands() or "transparency" in im.info
    return im.convert("RGBA" if alpha else "RGB")


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
