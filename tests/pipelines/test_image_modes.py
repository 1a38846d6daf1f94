"""High-bit-depth images at ingest (16-bit PNG/TIFF, 32-bit int and float TIFF): their pHash
and thumbnail come from the 8-bit image a viewer shows (I;16 >> 8, I clipped to 0..65535 then
>> 8, F of 0..1 times 255 or else scaled by its max), never from Pillow's convert("L"), which
clips them at 255 (three different 16-bit pictures all white: kept 1, 2 "near" at 1.000)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipelines.config import DedupRules
from pipelines.dedup.phash import (
    image_keys,
    near_images,
    phash_image,
    thumbnail_bytes,
    visible_gray,
)
from pipelines.filters import Drop
from pipelines.filters.image import check_image

N = 128


def patterns() -> list[np.ndarray]:
    """The user's three pictures, float64 in [0, 1]: horizontal ramp, vertical ramp,
    sin * cos blobs (before they are written at some bit depth)."""
    x = np.arange(N, dtype=np.float64)
    horiz = (1000 + 59000 * x / 127)[None, :].repeat(N, 0) / 65535
    vert = horiz.T.copy()
    yy, xx = np.mgrid[0:N, 0:N].astype(np.float64)
    blobs = (30000 + 20000 * np.sin(xx / 8) * np.cos(yy / 8)) / 65535
    return [horiz, vert, blobs]


def encode(arr: np.ndarray, fmt: str) -> bytes:
    b = io.BytesIO()
    Image.fromarray(arr).save(b, fmt)
    return b.getvalue()


def as16(p: np.ndarray) -> np.ndarray:
    return np.rint(p * 65535).astype(np.uint16)


CASES = {
    "png16": lambda p: encode(as16(p), "PNG"),
    "tiff16": lambda p: encode(as16(p), "TIFF"),
    "tiff_int32": lambda p: encode(as16(p).astype(np.int32), "TIFF"),
    "tiff_float": lambda p: encode(p.astype(np.float32), "TIFF"),
    "tiff_float_over_1": lambda p: encode((p * 1000).astype(np.float32), "TIFF"),
}
MODES = {"png16": "I;16", "tiff16": "I;16", "tiff_int32": "I", "tiff_float": "F", "tiff_float_over_1": "F"}


def _keys(infos) -> np.ndarray:
    return image_keys([i.phash for i in infos], [i.thumb for i in infos])


@pytest.mark.parametrize("case", sorted(CASES))
def test_distinct_high_bit_depth_images_are_not_near_duplicates(case):
    payloads = [CASES[case](p) for p in patterns()]
    assert Image.open(io.BytesIO(payloads[0])).mode == MODES[case]
    infos = [check_image(d) for d in payloads]
    assert not any(isinstance(i, Drop) for i in infos), infos
    keys = _keys(infos)
    a, b = np.triu_indices(3, 1)
    sim, near = near_images(keys[a], keys[b], DedupRules().phash_max_distance)
    assert not near.any(), (case, sim)


def _eight_bit(p: np.ndarray, case: str) -> np.ndarray:
    """The 8-bit image the documented mapping makes of pattern p written as `case`."""
    if case.startswith("tiff_float"):
        f = p.astype(np.float32).astype(np.float64)
        if case == "tiff_float_over_1":
            f = (p * 1000).astype(np.float32).astype(np.float64)
            f = f / f.max()
        return np.rint(f * 255).astype(np.uint8)
    return (as16(p) >> 8).astype(np.uint8)


@pytest.mark.parametrize("case", sorted(CASES))
def test_high_bit_depth_hashes_like_its_8_bit_rendering(case):
    """Not only different: the key is the one of the 8-bit picture a viewer shows."""
    for p in patterns():
        info = check_image(CASES[case](p))
        ref = Image.fromarray(_eight_bit(p, case), "L")
        assert info.phash == phash_image(ref), case
        assert info.thumb == thumbnail_bytes(visible_gray(ref)), case
        assert visible_gray(Image.open(io.BytesIO(CASES[case](p)))).mode == "L"


def test_32_bit_int_is_clipped_to_16_bits():
    a = np.array([[-5, 0, 255, 256, 65535, 70000, 2**31 - 1]], np.int32)
    g = visible_gray(Image.fromarray(a))
    assert g.mode == "L" and np.asarray(g).tolist() == [[0, 0, 0, 1, 255, 255, 255]]


def test_float_nan_and_inf_map_deterministically():
    a = np.array([[np.nan, -1.0, 0.0, 0.5, 1.0, np.inf]], np.float32)
    g = visible_gray(Image.fromarray(a))
    assert np.asarray(g).tolist() == [[0, 0, 0, 128, 255, 255]]


def test_16_bit_with_transparency_composites_over_grey():
    a = as16(patterns()[0])
    im = Image.fromarray(a)
    im.info["transparency"] = int(a[0, 0])  # the first column's value is transparent
    g = np.asarray(visible_gray(im))
    assert g[0, 0] == 192 and g[0, 1] == int(a[0, 1]) >> 8


def test_meta_of_16_bit_and_float_images_is_their_size_and_format():
    p = patterns()[2][:96]  # 128 wide, 96 high
    assert check_image(encode(as16(p), "PNG")).meta() == {"format": "png", "width": 128, "height": 96}
    for data in (encode(as16(p), "TIFF"), encode(p.astype(np.float32), "TIFF")):
        assert check_image(data).meta() == {"format": "tiff", "width": 128, "height": 96}


def test_ingest_keeps_three_distinct_16_bit_pngs(tmp_path):
    from pipelines.ingest import read_duplicates, run_ingest

    raw = tmp_path / "raw"
    raw.mkdir()
    for name, p in zip(("horiz", "vert", "blobs"), patterns()):
        (raw / f"{name}.png").write_bytes(encode(as16(p), "PNG"))
    # and the same horizontal ramp at 8 bits: that one is a true near-duplicate
    (raw / "z_horiz8.png").write_bytes(encode((as16(patterns()[0]) >> 8).astype(np.uint8), "PNG"))
    url = "file://" + str(tmp_path / "repo")
    r = run_ingest(str(raw), url)
    assert (r.inputs, r.kept, r.duplicates, r.rejected) == (4, 3, 1, 0), r
    from dataversion import Repo

    dups = {d["source"]: d for d in read_duplicates(Repo.open(url), "main")}
    assert list(dups) == ["z_horiz8.png"] and dups["z_horiz8.png"]["kind"] == "near", dups
