"""Image augmentations as sample transforms, `transform(sample, rng) -> sample`, drawing
only from the `rng` they are given (so they resume bit-identically), on Pillow and numpy
(no torchvision needed; torchvision v2 transforms work too, under `randomness.global_rng`).

    loader = SnapshotLoader(url, decode=True, num_workers=4,
                            transform=Compose([RandomResizedCrop(224), RandomHorizontalFlip()]))

They act on `sample["image"]`, a uint8 (C, H, W) tensor (`decode`), and return one of the
same kind; a sample without one (text, audio, or no `key` at all: a mixed-modality commit)
passes through unchanged and draws nothing. RandomResizedCrop follows torchvision's
RandomResizedCrop (area scale and aspect ratio ranges, 10 tries then a center crop),
resizing with Pillow's bilinear filter, every channel on its own as torchvision does on
tensors: an alpha channel is not premultiplied, so 4 channels give the same pixels whether
they are RGBA or CMYK (`image_mode=None`).

Fused decode: when a loader decodes (`decode=True`) and its transform starts with a
RandomResizedCrop (alone or first in a Compose), the pipeline calls its `decode_crop` on the
payload of an image record (other modalities take the unfused transform) instead: the crop
is chosen from the header's size (after the EXIF orientation, as `decode` applies it) with
the same draws and resized straight from Pillow's decoded, upright image in the mode decode
serves (`pixels.to_mode`: the same 8-bit mapping, the same channels for `image_mode=None`),
so the full-size pixels are never copied into a tensor. Same pixels as decode-then-crop.
With `draft=True` a JPEG is also decoded at the smallest DCT scale (1/2, 1/4, 1/8) that
still leaves the crop at least the output size (libjpeg's scaled IDCT): much less decode
work for large images, pixels close to but not equal to a full decode's.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any


def _resize(pil: Any, size: tuple[int, int], box: tuple[float, float, float, float]) -> Any:
    """Bilinear resize of `box` to `size` (w, h), each band on its own: Pillow premultiplies
    LA and RGBA by their alpha to resize them, which a 4-channel tensor (RGBA or CMYK?)
    cannot tell apart, so those are resized band by band (the same arithmetic per band)."""
    from PIL import Image

    if pil.mode in ("LA", "RGBA"):
        return Image.merge(pil.mode, [b.resize(size, Image.BILINEAR, box=box) for b in pil.split()])
    return pil.resize(size, Image.BILINEAR, box=box)


def _uniform(rng: Any, lo: float, hi: float) -> float:
    import torch

    return lo + (hi - lo) * float(torch.rand((), generator=rng))


class Compose:
    """Apply transforms in order, each with the same generator (they draw in turn)."""

    def __init__(self, transforms: Sequence[Any]):
        self.transforms = list(transforms)

    def split_fused(self) -> tuple[Any, Any]:
        """(a first step that can decode, the rest) for the fused decode, else (None, self)."""
        if self.transforms and hasattr(self.transforms[0], "decode_crop") \
                and getattr(self.transforms[0], "key", None) == "image":
            rest = self.transforms[1:]
            return self.transforms[0], (Compose(rest) if rest else None)
        return None, self

    def __call__(self, sample: dict[str, Any], rng: Any) -> dict[str, Any]:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample


class RandomResizedCrop:
    """Crop a random area (fraction `scale` of the image, aspect `ratio`) resized to `size`."""

    def __init__(self, size: int | tuple[int, int], scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), key: str = "image", draft: bool = False):
        self.size = (size, size) if isinstance(size, int) else tuple(size)  # (h, w)
        self.scale, self.ratio, self.key, self.draft = scale, ratio, key, bool(draft)

    def box(self, h: int, w: int, rng: Any) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the crop, as torchvision chooses it."""
        import torch

        area = h * w
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * _uniform(rng, *self.scale)
            aspect = math.exp(_uniform(rng, *log_ratio))
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (1,), generator=rng))
                left = int(torch.randint(0, w - cw + 1, (1,), generator=rng))
                return top, left, ch, cw
        in_ratio = w / h
        if in_ratio < min(self.ratio):
            cw, ch = w, int(round(w / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            ch, cw = h, int(round(h * max(self.ratio)))
        else:
            cw, ch = w, h
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def decode_crop(self, data: bytes, rng: Any, mode: str | None = "RGB", max_pixels: int | None = None) -> Any:
        """Image bytes -> the cropped, resized uint8 (C, H, W) tensor, drawing from `rng` as
        `__call__` does on the decoded image (the fused decode of the module docstring):
        the pixels of `decode.decode_image(data, mode=mode)` (upright, 8-bit, `mode`), then
        `__call__`."""
        from PIL import Image

        from ..pixels import exif_orientation, orient, oriented_size, to_mode
        from .decode import pil_to_tensor

        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise ValueError(f"{w}x{h} image is over the {max_pixels:,}-pixel limit")
            orientation = exif_orientation(im)  # a JPEG's: from the header, still draftable
            uw, uh = oriented_size(w, h, orientation)
            top, left, ch, cw = self.box(uh, uw, rng)
            oh, ow = self.size
            if self.draft and im.format in ("JPEG", "MPO"):
                # the scale each stored axis needs (5..8: the stored x axis is the upright y)
                need_x, need_y = (oh / ch, ow / cw) if orientation in (5, 6, 7, 8) else (ow / cw, oh / ch)
                im.draft(mode or im.mode, (math.ceil(w * need_x), math.ceil(h * need_y)))
            up = orient(to_mode(im, mode), orientation)
            sx, sy = up.size[0] / uw, up.size[1] / uh
            out = _resize(up, (ow, oh), (left * sx, top * sy, (left + cw) * sx, (top + ch) * sy))
        return pil_to_tensor(out)

    def __call__(self, sample: dict[str, Any], rng: Any) -> dict[str, Any]:
        from PIL import Image

        from .decode import pil_to_tensor

        img = sample.get(self.key)
        if img is None:  # not an image (text, audio): unchanged, nothing drawn
            return sample
        c, h, w = img.shape
        top, left, ch, cw = self.box(h, w, rng)
        hwc = img.permute(1, 2, 0).numpy()  # decode's tensor is a view of HWC pixels: no copy
        pil = Image.fromarray(hwc[:, :, 0] if c == 1 else hwc)
        out = _resize(pil, (self.size[1], self.size[0]), (left, top, left + cw, top + ch))
        sample[self.key] = pil_to_tensor(out)
        return sample


class RandomHorizontalFlip:
    """Mirror the image left-right with probability `p` (a sample without one: unchanged,
    nothing drawn)."""

    def __init__(self, p: float = 0.5, key: str = "image"):
        self.p, self.key = p, key

    def __call__(self, sample: dict[str, Any], rng: Any) -> dict[str, Any]:
        import torch

        if sample.get(self.key) is None:
            return sample
        if float(torch.rand((), generator=rng)) < self.p:
            sample[self.key] = torch.flip(sample[self.key], dims=(2,))
        return sample
