"""Image checks: full decode with Pillow, decompression-bomb guard, minimum size, EXIF
orientation, and the perceptual hash the near-duplicate stage needs (computed here, while
the decoded image is in memory: `pipelines.dedup.phash`, over a grey background so that
transparency counts).

The payload is stored as received (its record id is the hash of those bytes). Width and
height are reported after the EXIF orientation is applied, the orientation itself is kept
in the metadata (`exif_orientation`) so a loader can rotate the same way, and the pHash is
computed on the oriented image. Which orientation is read, and how it is applied, is the
code the loader uses (`dataversion.pixels.exif_orientation` / `orient`: JPEG, WebP,
PNG), so the recorded width and height are those of the tensor `decode=True` serves.
High-bit-depth images (16-bit PNG/TIFF, 32-bit int and float TIFF) are hashed on their 8-bit
rendering (`pipelines.dedup.phash.visible_gray`); their recorded width and height are the
file's, whatever the depth.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from dataversion.errors import human_message
from dataversion.pixels import exif_orientation, orient, oriented_size
from dataversion.sniff import IMAGE_FORMATS, sniff_format

from ..config import ImageRules
from ..dedup.phash import IMG_SIZE, phash_thumbnail, thumbnail_bytes, visible_gray
from . import Drop

_plugins: list[bool] = []


def register_plugins() -> None:
    """HEIF/HEIC through `pillow_heif` when it is installed (Pillow itself decodes PNG,
    JPEG, GIF, BMP, WebP, TIFF, PBM/PGM/PPM and AVIF). Once per process."""
    if not _plugins:
        _plugins.append(True)
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
        except ImportError:
            pass


@dataclass(frozen=True)
class ImageInfo:
    """A kept image: format, oriented size, EXIF orientation (1 = none), 64-bit pHash and
    the 8x8 grey thumbnail the near-duplicate rule compares (`pipelines.dedup.phash`)."""

    format: str
    width: int
    height: int
    orientation: int
    phash: int
    thumb: bytes = b""

    def meta(self) -> dict:
        d = {"format": self.format, "width": self.width, "height": self.height}
        if self.orientation != 1:
            d["exif_orientation"] = self.orientation
        return d


def check_image(data: bytes, rules: ImageRules = ImageRules()) -> ImageInfo | Drop:
    """Decode one image fully; never raises for bad input (returns a Drop)."""
    from PIL import Image

    fmt = sniff_format(data[:64])
    if fmt not in IMAGE_FORMATS:
        return Drop(
            "not_an_image",
            "content is not a PNG, JPEG, GIF, BMP, WebP, TIFF, PBM/PGM/PPM, AVIF or HEIF image",
        )
    register_plugins()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > rules.max_pixels:
                return Drop(
                    "decompression_bomb",
                    f"{width}x{height} = {width * height} pixels, limit {rules.max_pixels}",
                )
            if fmt == "jpeg":
                # DCT-domain downscale (1/2..1/8) while decoding every coefficient of the
                # stream: a truncated or corrupt JPEG still fails in load().
                img.draft("L", (64, 64))
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return Drop("decompression_bomb", human_message(e))
    except Exception as e:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, struct.error...
        return Drop("corrupt_image", f"{fmt} does not decode: {human_message(e)}")
    orientation = exif_orientation(img) if rules.apply_exif_orientation else 1
    width, height = oriented_size(width, height, orientation)
    if width < rules.min_width or height < rules.min_height:
        return Drop(
            "image_too_small", f"{width}x{height}, minimum {rules.min_width}x{rules.min_height}"
        )
    try:
        gray = orient(visible_gray(img), orientation)
        ph = phash_thumbnail(gray.resize((IMG_SIZE, IMG_SIZE), Image.Resampling.LANCZOS))
        thumb = thumbnail_bytes(gray)
    except Exception as e:  # noqa: BLE001
        return Drop("corrupt_image", f"{fmt} decoded but cannot be converted: {human_message(e)}")
    return ImageInfo(fmt, width, height, orientation, ph, thumb)
