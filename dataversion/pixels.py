"""Pillow images as a person sees them: upright (EXIF orientation) and in 8 bits.

Shared by everything that looks at pixels, so that ingest's pHash and thumbnails, the
report's thumbnails and the loader's tensors see the same picture. Pillow and numpy only.

- orientation (`exif_orientation`, `orient`, `oriented_size`): the EXIF orientation of JPEG,
  MPO, WebP and PNG files (1..8), applied as `PIL.ImageOps.exif_transpose` applies it.
- high bit depth (`to_8bit`): 16-bit (I;16*) >> 8; 32-bit int (I) clipped to 0..65535 then
  >> 8 (read as 16-bit samples, as Pillow opens 16-bit files); float (F): values taken as
  0..1 when the largest finite one is <= 1, else divided by it, clipped to 0..1, times 255
  rounded to nearest (NaN and -inf -> 0, +inf -> 255). A pure function of the pixels:
  Pillow's own convert("L"/"RGB") clips these at 255 (a 16-bit picture turns white).
- mode (`to_mode`): what the loader's `image_mode` serves (`dataversion.training.decode`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

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
