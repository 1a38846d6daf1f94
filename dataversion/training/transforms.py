"""Image augmentations as sample transforms, `transform(sample, rng) -> sample`, drawing
only from the `rng` they are given (so they resume bit-identically), on Pillow and numpy
(no torchvision needed; torchvision v2 transforms work too, under `randomness.global_rng`).

    loader = SnapshotLoader(url, decode=True, num_workers=4,
                            transform=Compose([RandomResizedCrop(224), RandomHorizontalFlip()]))

They act on `sample["image"]`, a uint8 (C, H, W) tensor (`decode`), and return one of the
same kind. RandomResizedCrop follows torchvision's RandomResizedCrop (area scale and aspect
ratio ranges, 10 tries then a center crop), resizing with Pillow's bilinear filter.

Fused decode: when a loader decodes (`decode=True`) and its transform starts with a
RandomResizedCrop (alone or first in a Compose), the pipeline calls its `decode_crop` on the
payload instead: the crop is chosen from the header's size with the same draws and resized
straight from Pillow's decoded image, so the full-size pixels are never copied into a
tensor. Same pixels as decode-then-crop. With `draft=True` a JPEG is also decoded at the
smallest DCT scale (1/2, 1/4, 1/8) that still leaves the crop at least the output size
(libjpeg's scaled IDCT): much less decode work for large images, pixels close to but not
equal to a full decode's.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np


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
        `__call__` does on the decoded image (the fused decode of the module docstring)."""
        import torch
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise ValueError(f"{w}x{h} image is over the {max_pixels:,}-pixel limit")
            top, left, ch, cw = self.box(h, w, rng)
            oh, ow = self.size
            if self.draft and im.format == "JPEG":
                im.draft(mode or im.mode, (math.ceil(w * ow / cw), math.ceil(h * oh / ch)))
            sx, sy = im.size[0] / w, im.size[1] / h
            if mode is not None and im.mode != mode:
                im = im.convert(mode)
            elif im.mode not in ("L", "RGB", "RGBA"):
                im = im.convert("RGB")
            out = im.resize((ow, oh), Image.BILINEAR, box=(left * sx, top * sy, (left + cw) * sx, (top + ch) * sy))
        arr = np.asarray(out)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return torch.from_numpy(arr.copy() if not arr.flags.writeable else arr).permute(2, 0, 1)

    def __call__(self, sample: dict[str, Any], rng: Any) -> dict[str, Any]:
        import torch
        from PIL import Image

        img = sample[self.key]
        c, h, w = img.shape
        top, left, ch, cw = self.box(h, w, rng)
        hwc = img.permute(1, 2, 0).numpy()  # decode's tensor is a view of HWC pixels: no copy
        pil = Image.fromarray(hwc[:, :, 0] if c == 1 else hwc)
        out = pil.resize((self.size[1], self.size[0]), Image.BILINEAR, box=(left, top, left + cw, top + ch))
        arr = np.asarray(out)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        sample[self.key] = torch.from_numpy(arr.copy() if not arr.flags.writeable else arr).permute(2, 0, 1)
        return sample


class RandomHorizontalFlip:
    """Mirror the image left-right with probability `p`."""

    def __init__(self, p: float = 0.5, key: str = "image"):
        self.p, self.key = p, key

    def __call__(self, sample: dict[str, Any], rng: Any) -> dict[str, Any]:
        import torch

        if float(torch.rand((), generator=rng)) < self.p:
            sample[self.key] = torch.flip(sample[self.key], dims=(2,))
        return sample
