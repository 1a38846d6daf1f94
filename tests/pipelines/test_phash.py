"""Image near-duplicates on what a person sees (issue 18, item 1)."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image
from pipeline_samples import png_bytes
from quality_sets import adwaita_icons, pairwise_pr

from pipelines.config import DedupRules
from pipelines.dedup.index import DedupIndex, load_parent_index
from pipelines.dedup.phash import PHASH_ALGORITHM, phash_image, visible_gray
from pipelines.filters.image import check_image

_ICONS = adwaita_icons()
needs_adwaita = pytest.mark.skipif(
    _ICONS is None,
    reason="the Adwaita icon theme is not installed (apt-get install -y adwaita-icon-theme)",
)


def reference(img) -> int:
    """What the hash is defined as: imagehash.phash of the composited image."""
    return int(str(imagehash.phash(visible_gray(img))), 16)


def generated_images() -> list:
    rng = np.random.default_rng(3)
    out = [
        Image.new("L", (40, 40), 0),  # flat: every AC coefficient 0, median ties
        Image.new("RGB", (33, 17), (10, 200, 30)),
        Image.new("RGBA", (64, 64), (0, 0, 0, 0)),  # fully transparent
        Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (7, 9, 4), dtype=np.uint8), "RGBA"),
        Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (50, 1))),  # a ramp
        Image.open(io.BytesIO(png_bytes(256, 192, seed=5))),
        Image.open(io.BytesIO(png_bytes(120, 90, seed=6, fmt="JPEG", quality=60))),
    ]
    la = Image.fromarray(rng.integers(0, 256, (30, 30, 2), dtype=np.uint8), "LA")
    pal = Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).convert("P")
    pal.info["transparency"] = 0
    return out + [la, pal]


def test_phash_is_imagehash_bit_for_bit_on_generated_images():
    for img in generated_images():
        assert phash_image(img) == reference(img), img


@needs_adwaita
def test_phash_is_imagehash_bit_for_bit_on_adwaita():
    paths, images, _ = _ICONS
    for p, img in zip(paths[::3], images[::3]):
        assert phash_image(img) == reference(img), p


def _shape(draw, color=(0, 0, 0, 255)):
    from PIL import ImageDraw

    img = Image.new("RGBA", (48, 48), (0, 0, 0, 0))
    draw(ImageDraw.Draw(img), color)
    return img


SHAPES = {
    "disc": lambda d, c: d.ellipse([8, 8, 40, 40], fill=c),
    "triangle": lambda d, c: d.polygon([(4, 44), (24, 4), (44, 44)], fill=c),
    "arrow": lambda d, c: d.polygon(
        [(4, 24), (24, 4), (24, 16), (44, 16), (44, 32), (24, 32), (24, 44)], fill=c
    ),
    "corner": lambda d, c: (
        d.rectangle([6, 6, 14, 42], fill=c),
        d.rectangle([6, 34, 42, 42], fill=c),
    ),
}


def test_shape_in_alpha_only_counts():
    """Black RGB everywhere, the shape only in alpha (GNOME symbolic icons): different
    shapes must not hash alike (RGBA -> RGB made every such icon one black square)."""
    limit = DedupRules().phash_max_distance
    for color in ((0, 0, 0, 255), (255, 255, 255, 255)):  # black and white on transparent
        hashes = {k: phash_image(_shape(f, color)) for k, f in SHAPES.items()}
        names = sorted(hashes)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                assert bin(hashes[a] ^ hashes[b]).count("1") > limit, (color, a, b)
    # the same shape drawn at another size stays a near-duplicate
    big = _shape(SHAPES["arrow"]).resize((96, 96), Image.Resampling.LANCZOS)
    d = bin(phash_image(big) ^ phash_image(_shape(SHAPES["arrow"]))).count("1")
    assert d <= limit


def test_check_image_hashes_the_oriented_composited_image():
    img = Image.fromarray(
        np.random.default_rng(1).integers(0, 256, (40, 60, 4), dtype=np.uint8), "RGBA"
    )
    buf = io.BytesIO()
    img.save(buf, "PNG")
    assert check_image(buf.getvalue()).phash == reference(img)


def test_index_params_name_the_phash_algorithm():
    """An index whose pHashes come from another algorithm is rebuilt, never compared."""
    assert DedupRules().index_params()["phash"] == PHASH_ALGORITHM

    class OneCommitRepo:
        def __init__(self, index):
            self.index = index
            self.rebuilt = False

        def read_attachment(self, cid, name):
            return self.index.to_bytes()

        def read_rows(self, cid, columns):
            self.rebuilt = True
            return iter(())

    rules = DedupRules()
    old = DedupIndex.empty(rules)
    old.params = {**old.params, "phash": "dct32-8x8-v1"}
    repo = OneCommitRepo(old)
    load_parent_index(repo, "c1", rules)
    assert repo.rebuilt


@needs_adwaita
def test_adwaita_precision_recall():
    """Sizes of one icon are duplicates, different icons are not (aliases of one picture
    count as one icon). Measured, at the default distance 4: precision 0.73, recall 0.63
    (the old RGB-only hash: precision 0.0014). The issue's target of 0.95 for both is not
    reached by a 64-bit pHash on this set: most false pairs are icons a person tells apart
    by a detail of a few pixels (battery-level-30 vs -40, list-add vs list-remove at
    16 px), most missed pairs are one icon at 16 px and at 48 px, drawn with different
    hinting. The floors below catch a regression; the figures are printed by
    benchmarks/bench_quality.py."""
    _, images, labels = _ICONS
    hashes = np.array([phash_image(im) for im in images], np.uint64)
    precision, recall = pairwise_pr(hashes, labels, DedupRules().phash_max_distance)
    assert precision >= 0.70, precision
    assert recall >= 0.60, recall
