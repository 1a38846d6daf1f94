"""Decode and transforms on images that are not 8-bit RGB, and on commits that are not only
images: 16-bit PNGs served at 8 bits (>> 8, not clipped white), image_mode=None keeping the
file's channels (1 for grey of any depth, 4 for CMYK) on the plain and the fused path alike,
EXIF orientation applied at decode (as ingest records it), image transforms passing
non-image samples through, and a batch whose every record was skipped."""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")
soundfile = pytest.importorskip("soundfile")

import pyarrow as pa  # noqa: E402
from PIL import ImageOps  # noqa: E402

from dataversion import Repo  # noqa: E402
from dataversion.records import make_binary_records, make_text_records  # noqa: E402
from dataversion.torch import SnapshotLoader  # noqa: E402
from dataversion.training.decode import decode_image  # noqa: E402
from dataversion.training.randomness import sample_generator  # noqa: E402
from dataversion.training.transforms import Compose, RandomHorizontalFlip, RandomResizedCrop  # noqa: E402


def _repo(tmp_path, payloads, modalities=None, extra=None) -> str:
    url = "file://" + str(tmp_path / "repo")
    t = make_binary_records(payloads, modalities or ["image"] * len(payloads))
    if extra is not None:
        t = pa.concat_tables([t, extra])
    Repo.init(url).commit(t, branch="main", message="m")
    return url


def _png16() -> tuple[bytes, np.ndarray]:
    yy, xx = np.mgrid[0:64, 0:96].astype(np.float64)
    a = np.rint(30000 + 20000 * np.sin(xx / 8) * np.cos(yy / 8) + 50 * xx).astype(np.uint16)
    b = io.BytesIO()
    Image.fromarray(a).save(b, "PNG")
    return b.getvalue(), a


def _jpeg(h, w, mode="RGB", orientation=None, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    a[: h // 2, : w // 3] //= 4  # structure: a wrong rotation or crop shows
    im = Image.fromarray(a).convert(mode)
    kw = {"quality": 90}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif.tobytes()
    b = io.BytesIO()
    im.save(b, "JPEG", **kw)
    return b.getvalue()


# ---- item 2: 16-bit PNGs ----------------------------------------------------------------


@pytest.mark.parametrize("mode,channels", [("RGB", 3), ("L", 1), (None, 1)])
def test_16_bit_png_is_served_scaled_to_8_bits(tmp_path, mode, channels):
    data, a = _png16()
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    url = _repo(tmp_path, [data])
    b = next(iter(SnapshotLoader(url, batch_size=1, decode=True, image_mode=mode)))
    img = b["image"][0]
    assert img.dtype == torch.uint8 and tuple(img.shape) == (channels, 64, 96)
    want = (a >> 8).astype(np.uint8)
    for c in range(channels):
        assert np.array_equal(img[c].numpy(), want)
    assert abs(img.float().mean().item() - want.mean()) < 1e-3 and 100 < want.mean() < 140


def test_16_bit_png_fused_crop_equals_decode_then_crop():
    data, _ = _png16()
    for mode in ("RGB", "L", None):
        crop = RandomResizedCrop(24)
        for s in range(3):
            fused = crop.decode_crop(data, sample_generator(0, 0, s), mode)
            plain = crop({"image": decode_image(data, mode=mode)}, sample_generator(0, 0, s))["image"]
            assert torch.equal(fused, plain), (mode, s)
            assert fused.float().mean() < 200  # not the clipped white


# ---- item 3: EXIF orientation -------------------------------------------------------------


def _oriented_reference(data: bytes, mode="RGB") -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert(mode))


def test_exif_orientation_is_applied_at_decode(tmp_path):
    from pipelines.filters.image import check_image

    data = _jpeg(100, 200, orientation=6)
    assert check_image(data).meta() == {"format": "jpeg", "width": 100, "height": 200, "exif_orientation": 6}
    url = _repo(tmp_path, [data])
    img = next(iter(SnapshotLoader(url, batch_size=1, decode=True)))["image"][0]
    assert tuple(img.shape) == (3, 200, 100)
    assert np.array_equal(img.permute(1, 2, 0).numpy(), _oriented_reference(data))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_plain_and_fused(orientation):
    data = _jpeg(60, 90, orientation=orientation, seed=orientation)
    plain = decode_image(data)
    assert np.array_equal(plain.permute(1, 2, 0).numpy(), _oriented_reference(data))
    crop = RandomResizedCrop((20, 30), scale=(0.3, 0.9))
    for s in range(4):
        fused = crop.decode_crop(data, sample_generator(1, 0, s))
        unfused = crop({"image": decode_image(data)}, sample_generator(1, 0, s))["image"]
        assert torch.equal(fused, unfused), (orientation, s)


def test_orientation_with_the_jpeg_draft():
    big = _jpeg(400, 640, orientation=6, seed=9)
    kw = dict(scale=(0.9, 1.0))
    draft = RandomResizedCrop((64, 32), draft=True, **kw).decode_crop(big, sample_generator(0, 0, 1))
    full = RandomResizedCrop((64, 32), **kw).decode_crop(big, sample_generator(0, 0, 1))
    assert draft.shape == full.shape == (3, 64, 32)
    assert (draft.float() - full.float()).abs().mean() < 12  # close, not equal (scaled IDCT)
    assert not torch.equal(draft, full)  # the draft was taken (after reading the orientation)
    # the draft really decodes smaller, and still the right way round
    unrotated = RandomResizedCrop((64, 32), draft=True, **kw).decode_crop(_jpeg(400, 640, seed=9), sample_generator(0, 0, 1))
    assert (draft.float() - unrotated.float()).abs().mean() > 12


# ---- item 4: image_mode=None on CMYK, fused and not ------------------------------------


class Noop:
    def __call__(self, sample, rng):
        return sample


def test_cmyk_fused_and_unfused_agree_with_image_mode_none(tmp_path):
    data = _jpeg(60, 80, mode="CMYK")
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    assert decode_image(data, mode=None).shape[0] == 4  # None keeps the file's channels
    url = _repo(tmp_path, [data])
    got = []
    for t in (Compose([RandomResizedCrop(40)]), Compose([Noop(), RandomResizedCrop(40)])):
        got.append(next(iter(SnapshotLoader(url, batch_size=1, decode=True, image_mode=None, transform=t)))["image"])
    assert got[0].shape == got[1].shape == (1, 4, 40, 40)
    assert torch.equal(got[0], got[1])


def test_rgba_and_la_fused_equals_unfused():
    rng = np.random.default_rng(3)
    for mode, ch in (("RGBA", 4), ("LA", 2)):
        a = rng.integers(0, 256, (30, 50, ch), dtype=np.uint8)
        a[..., -1] = np.where(a[..., -1] < 60, 0, a[..., -1])  # some fully transparent pixels
        b = io.BytesIO()
        Image.fromarray(a, mode).save(b, "PNG")
        crop = RandomResizedCrop(16)
        for s in range(3):
            fused = crop.decode_crop(b.getvalue(), sample_generator(0, 0, s), None)
            plain = crop({"image": decode_image(b.getvalue(), mode=None)}, sample_generator(0, 0, s))["image"]
            assert fused.shape[0] == ch and torch.equal(fused, plain), (mode, s)


# ---- item 5: a commit of images, texts and audio --------------------------------------------


def _wav() -> bytes:
    b = io.BytesIO()
    soundfile.write(b, np.zeros((400, 1), np.float32), 8000, format="WAV", subtype="FLOAT")
    return b.getvalue()


def test_readme_transform_on_a_mixed_modality_commit(tmp_path):
    imgs = [_jpeg(40 + i, 50, seed=i) for i in range(4)]
    texts = [f"text {i}" for i in range(3)]
    url = _repo(tmp_path, imgs + [_wav()], ["image"] * 4 + ["audio"], extra=make_text_records(texts))
    aug = Compose([RandomResizedCrop(32), RandomHorizontalFlip()])
    seen = {"image": 0, "audio": 0, "text": 0}
    for b in SnapshotLoader(url, batch_size=8, decode=True, transform=aug):
        for i, m in enumerate(b["modality"]):
            seen[m] += 1
            if m == "image":
                assert tuple(b["image"][i].shape) == (3, 32, 32)
            elif m == "audio":
                assert tuple(b["audio"][i].shape) == (1, 400) and b["image"][i] is None
            else:
                assert b["text"][i] in texts and b["image"][i] is None
    assert seen == {"image": 4, "audio": 1, "text": 3}
    # each built-in transform leaves a sample without an image as it is, drawing nothing
    for t in (RandomResizedCrop(8), RandomHorizontalFlip(p=1.0), aug):
        g = sample_generator(0, 0, 0)
        s = {"record_id": "x", "text": "hi"}
        assert t(dict(s), g) == s
        assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=sample_generator(0, 0, 0)))


# ---- item 6: a batch whose every record was skipped ---------------------------------------


class CountCalls:
    def __init__(self):
        self.sizes = []

    def __call__(self, batch, rng):
        self.sizes.append(len(batch["record_id"]))
        return batch


def test_all_skipped_batch_keeps_its_keys_and_skips_batch_transform(tmp_path):
    bad = [g[:60] + bytes([i]) * 40 for i, g in enumerate(_jpeg(20, 20, seed=10 + i) for i in range(4))]
    url = _repo(tmp_path / "bad", bad)
    bt = CountCalls()
    ld = SnapshotLoader(url, batch_size=2, decode=True, on_decode_error="skip", batch_transform=bt)
    batches = list(ld)
    assert len(batches) == 2 and all(len(b.skipped) == 2 for b in batches)
    assert bt.sizes == []  # batch_transform is not called on a batch without samples
    assert ld.decode_skipped == 4 and ld.position == 4
    good = next(iter(SnapshotLoader(_repo(tmp_path / "good", [_jpeg(20, 20)]), batch_size=2, decode=True)))
    for e in batches:
        assert e["record_id"] == [] and "data" not in e
        assert all(v == [] for v in e.values())
        assert set(good) - set(e) == {"image"}  # every column of the batch's rows, none decoded
    # with columns: the ones asked (and what decoding read), still record_id
    ld = SnapshotLoader(url, batch_size=2, decode=True, on_decode_error="skip", columns=["label"])
    assert set(next(iter(ld))) == {"record_id", "label", "modality"}
