"""Decode and transforms in the workers: image/audio/text batches as tensors against a direct
decode, collation of variable sizes, pin_memory, randomness that depends only on (seed,
epoch, position) (any num_workers, any world size, bit-identical after SIGKILL + resume
with 0 -> 2 -> 3 workers), and the corrupt-record path (raise with the id, or skip and count)."""

from __future__ import annotations

import io
import signal
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
soundfile = pytest.importorskip("soundfile")
Image = pytest.importorskip("PIL.Image")

from scipy.signal import resample_poly  # noqa: E402

from dataversion import Repo  # noqa: E402
from dataversion.errors import BadInputError  # noqa: E402
from dataversion.records import make_binary_records, make_text_records  # noqa: E402
from dataversion.torch import SnapshotDataset, SnapshotLoader, read_checkpoint  # noqa: E402
from dataversion.training.randomness import global_rng, sample_generator  # noqa: E402
from dataversion.training.samples import DecodedBatch, collate  # noqa: E402
from dataversion.training.transforms import Compose, RandomHorizontalFlip, RandomResizedCrop  # noqa: E402

from .scripts import resumable_trainer  # noqa: E402

N_IMG = 60


def _jpeg(rng, h, w, fmt="JPEG", mode="RGB") -> bytes:
    a = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    a[: h // 2] //= 3  # some structure, so a crop's position matters
    im = Image.fromarray(a).convert(mode)
    b = io.BytesIO()
    im.save(b, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return b.getvalue()


def _wav(rng, frames, rate, channels=1) -> bytes:
    b = io.BytesIO()
    soundfile.write(b, (rng.standard_normal((frames, channels)) * 0.2).astype(np.float32), rate, format="WAV", subtype="FLOAT")
    return b.getvalue()


def _repo(tmp_path_factory, name, payloads, modalities) -> str:
    url = "file://" + str(tmp_path_factory.mktemp(name) / "repo")
    Repo.init(url).commit(make_binary_records(payloads, modalities, labels=[str(i % 4) for i in range(len(payloads))]),
                          branch="main", message="media", target_shard_bytes=32 * 1024)
    return url


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    rng = np.random.default_rng(1)
    payloads = [_jpeg(rng, 48, 64, "JPEG" if i % 3 else "PNG") for i in range(N_IMG)]
    return _repo(tmp_path_factory, "img", payloads, ["image"] * N_IMG), payloads


@pytest.fixture(scope="module")
def mixed_sizes(tmp_path_factory):
    rng = np.random.default_rng(2)
    payloads = [_jpeg(rng, 30 + i, 40 + 2 * i, mode="L" if i % 5 == 0 else "RGB") for i in range(40)]
    return _repo(tmp_path_factory, "sizes", payloads, ["image"] * 40), payloads


def _direct_image(data: bytes, mode="RGB") -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert(mode))


def _by_id(payloads) -> dict[str, bytes]:
    import pyarrow as pa

    from dataversion.records import binary_record_ids

    return {i.hex(): p for i, p in zip(binary_record_ids(pa.array(payloads, pa.large_binary())), payloads)}


def test_image_batches_are_uint8_chw_equal_to_a_direct_decode(images):
    url, payloads = images
    by_id = _by_id(payloads)
    ld = SnapshotLoader(url, batch_size=16, decode=True, num_workers=2)
    seen = 0
    for b in ld:
        img = b["image"]
        assert isinstance(img, torch.Tensor) and img.dtype == torch.uint8 and img.shape[1:] == (3, 48, 64)
        assert img.shape[0] == len(b["record_id"]) and "data" not in b and b["modality"][0] == "image"
        for rid, t in zip(b["record_id"], img):
            assert np.array_equal(t.permute(1, 2, 0).numpy(), _direct_image(by_id[rid]))
        seen += img.shape[0]
    assert seen == N_IMG and ld.decode_skipped == 0


def test_variable_sizes_collate_to_lists_and_modes(mixed_sizes):
    url, payloads = mixed_sizes
    by_id = _by_id(payloads)
    b = next(iter(SnapshotLoader(url, batch_size=8, decode=True)))
    assert isinstance(b["image"], list) and len(b["image"]) == 8
    for rid, t in zip(b["record_id"], b["image"]):
        assert t.dtype == torch.uint8 and t.shape[0] == 3
        assert np.array_equal(t.permute(1, 2, 0).numpy(), _direct_image(by_id[rid]))
    b = next(iter(SnapshotLoader(url, batch_size=8, decode=True, image_mode="L")))
    assert all(t.shape[0] == 1 for t in b["image"])
    crop = SnapshotLoader(url, batch_size=8, decode=True, transform=RandomResizedCrop(24))
    b = next(iter(crop))
    assert b["image"].shape == (8, 3, 24, 24)  # a transform that fixes the size: stacked


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    rng = np.random.default_rng(3)
    payloads = [_wav(rng, 800, 8000) for _ in range(10)] + [_wav(rng, 1600, 16000) for _ in range(10)]
    payloads += [_wav(rng, 800 + 10 * i, 8000, channels=2) for i in range(4)]
    return _repo(tmp_path_factory, "audio", payloads, ["audio"] * len(payloads)), payloads


def test_audio_float32_and_resampled(audio):
    url, payloads = audio
    by_id = _by_id(payloads)
    n = 0
    for b in SnapshotLoader(url, batch_size=24, shuffle=False, decode=True, sample_rate=16000, num_workers=1):
        assert b["sample_rate"].dtype == torch.int64 and set(b["sample_rate"].tolist()) == {16000}
        clips = b["audio"] if isinstance(b["audio"], list) else list(b["audio"])
        for rid, clip in zip(b["record_id"], clips):
            raw, rate = soundfile.read(io.BytesIO(by_id[rid]), dtype="float32", always_2d=True)
            want = raw.T if rate == 16000 else resample_poly(raw.T, 2, 1, axis=1).astype(np.float32)
            assert clip.dtype == torch.float32 and clip.shape == want.shape
            assert np.array_equal(clip.numpy(), want)
            n += 1
    assert n == len(payloads)
    # without sample_rate: the file's rate, mono clips of one length stack
    mono = SnapshotLoader(url, batch_size=4, shuffle=False, decode=True)
    rates = set()
    for b in mono:
        rates |= set(b["sample_rate"].tolist())
        if isinstance(b["audio"], torch.Tensor):
            assert b["audio"].dtype == torch.float32 and b["audio"].ndim == 3
    assert rates == {8000, 16000}


class Tokenize:
    """A tokenizer is just a transform: bytes of the text, padded to 16."""

    def __call__(self, sample, rng):
        ids = list(sample["text"].encode()[:16])
        sample["tokens"] = torch.tensor(ids + [0] * (16 - len(ids)), dtype=torch.int64)
        return sample


def test_text_stays_str_and_a_tokenizer_is_a_transform(tmp_path):
    url = "file://" + str(tmp_path / "repo")
    texts = [f"text number {i}" for i in range(50)]
    Repo.init(url).commit(make_text_records(texts), branch="main", message="t")
    b = next(iter(SnapshotLoader(url, batch_size=10, decode=True, transform=Tokenize(), num_workers=1)))
    assert all(isinstance(t, str) for t in b["text"]) and b["tokens"].shape == (10, 16) and "data" not in b
    assert bytes(b["tokens"][0][: len(b["text"][0])].tolist()).decode() == b["text"][0]
    with pytest.raises(BadInputError):
        SnapshotLoader(url, decode=True, format="arrow")
    with pytest.raises(BadInputError):
        SnapshotLoader(url, decode=True, on_decode_error="ignore")


class _MarkShared:
    """A batch transform (it runs in the worker, after collation): whether the stacked
    tokens already lie in shared memory, before the batch is sent to the parent."""

    def __call__(self, batch, rng):
        batch["stacked_in_shared_memory"] = torch.tensor(batch["tokens"].is_shared())
        return batch


def test_a_worker_stacks_a_batch_straight_into_shared_memory(tmp_path):
    """A tensor sent from a worker must be in shared memory; stacked anywhere else, pickling
    copies it once more (8-19 MB per batch of clips or images). In the parent process, no
    shared memory is made."""
    url = "file://" + str(tmp_path / "repo")
    Repo.init(url).commit(make_text_records([f"text number {i}" for i in range(40)]), branch="main", message="t")
    opts = dict(batch_size=10, decode=True, transform=Tokenize(), batch_transform=_MarkShared())
    worker = [b["stacked_in_shared_memory"].item() for b in SnapshotLoader(url, num_workers=1, **opts)]
    assert worker == [True] * 4
    parent = [b["stacked_in_shared_memory"].item() for b in SnapshotLoader(url, num_workers=0, **opts)]
    assert parent == [False] * 4


def test_collate_policy():
    b = collate([{"a": 1, "b": 1.5, "c": True, "t": torch.zeros(2), "s": "x", "n": np.ones(3)},
                 {"a": 2, "b": 2, "c": False, "t": torch.zeros(3), "s": None, "n": np.ones(3)}])
    assert b["a"].dtype == torch.int64 and b["b"].dtype == torch.float32 and b["c"].dtype == torch.bool
    assert isinstance(b["t"], list) and b["s"] == ["x", None] and b["n"].shape == (2, 3)
    assert collate([{"a": 1}, {"b": 2}]) == {"a": [1, None], "b": [None, 2]}  # missing keys: None


AUGMENT = Compose([RandomResizedCrop(32, scale=(0.2, 1.0)), RandomHorizontalFlip()])


def _global_noise(sample, rng):
    with global_rng(rng):  # how a torchvision transform (global RNG) is made resumable
        sample["noise"] = torch.rand(2)
    return sample


def _augmented(url, **kw) -> dict[str, bytes]:
    kw.setdefault("transform", Compose([AUGMENT, _global_noise]))
    out = {}
    for b in SnapshotLoader(url, batch_size=8, decode=True, window=32, **kw):
        for rid, img, noise in zip(b["record_id"], b["image"], b["noise"]):
            out[rid] = img.numpy().tobytes() + noise.numpy().tobytes()
    return out


def test_augmentations_depend_only_on_seed_epoch_position(images):
    url, _ = images
    ref = _augmented(url, num_workers=0)
    assert len(ref) == N_IMG
    assert _augmented(url, num_workers=2) == ref
    assert _augmented(url, num_workers=3, pin_memory=True) == ref
    # world size 2: each sample keeps its global position, so its augmentation
    two = {**_augmented(url, rank=0, world_size=2), **_augmented(url, rank=1, world_size=2)}
    assert two == ref
    assert _augmented(url, seed=1) != ref
    g1, g2 = sample_generator(0, 0, 5), sample_generator(0, 0, 5)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))
    assert not torch.equal(torch.rand(4, generator=sample_generator(0, 1, 5)), torch.rand(4, generator=sample_generator(0, 0, 5)))


def _batch_flip(batch, rng):
    if float(torch.rand((), generator=rng)) < 0.5:
        batch["image"] = torch.flip(batch["image"], dims=(3,))
    batch["batch_noise"] = torch.rand(1, generator=rng).expand(len(batch["record_id"])).clone()
    return batch


def test_batch_transform_and_pin_memory(images):
    url, _ = images
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CPU-only: torch says it will not pin
        runs = [[(b["image"].clone(), b["batch_noise"].clone(), b.position) for b in
                 SnapshotLoader(url, batch_size=8, decode=True, batch_transform=_batch_flip, num_workers=nw, pin_memory=True)]
                for nw in (0, 2)]
    assert len(runs[0]) == len(runs[1]) == -(-N_IMG // 8)
    for (a, na, pa), (b, nb, pb) in zip(*runs):
        assert torch.equal(a, b) and torch.equal(na, nb) and pa == pb
    db = next(iter(SnapshotDataset(url, batch_size=4, decode=True)))
    pinned = torch.utils.data._utils.pin_memory.pin_memory(DecodedBatch(db))  # what torch's pin thread calls
    assert isinstance(pinned, DecodedBatch) and torch.equal(pinned.batch["image"], db["image"])
    if torch.accelerator.is_available():
        assert pinned.batch["image"].is_pinned()


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory):
    rng = np.random.default_rng(4)
    payloads = [_jpeg(rng, 20, 20) for _ in range(30)]
    bad = payloads[7][:60] + b"\x00" * 40  # a JPEG header, then nothing
    payloads[7] = bad
    url = _repo(tmp_path_factory, "corrupt", payloads, ["image"] * 30)
    return url, next(rid for rid, p in _by_id(payloads).items() if p == bad)


@pytest.mark.parametrize("nw", [0, 2])
def test_corrupt_record_raises_with_its_id_by_default(corrupt, nw):
    url, bad_id = corrupt
    with pytest.raises(Exception) as e:
        list(SnapshotLoader(url, batch_size=8, decode=True, num_workers=nw))
    assert bad_id in str(e.value) and "does not decode" in str(e.value)


def test_corrupt_record_skipped_and_counted(corrupt):
    url, bad_id = corrupt
    ld = SnapshotLoader(url, batch_size=8, decode=True, num_workers=2, on_decode_error="skip")
    ids, skipped = [], []
    for b in ld:
        ids += b["record_id"]
        skipped += b.skipped
        assert b["image"].shape[0] == len(b["record_id"])
    assert skipped == [bad_id] and bad_id not in ids and len(ids) == 29 and ld.decode_skipped == 1
    assert ld.position == 30  # the skipped record counts as consumed: resume is unchanged


TRAIN = resumable_trainer(
    imports="from dataversion.training.transforms import Compose, RandomHorizontalFlip, RandomResizedCrop",
    setup='aug = Compose([RandomResizedCrop(24, scale=(0.2, 1.0)), RandomHorizontalFlip()])',
    loader='SnapshotLoader(url, batch_size=4, num_workers=int(os.environ["NUM_WORKERS"]), window=16, decode=True, transform=aug)',
    log_line='f"{epoch} {hashlib.sha256(batch[\'image\'].numpy().tobytes()).hexdigest()[:24]} {\',\'.join(r[:8] for r in batch[\'record_id\'])}"',
    after_step="""
        if step % 3 == 0:
            save_checkpoint(ckpt, loader=loader, trainer={"step": step}, step=step)
    """,
)


def test_sigkill_resume_is_bit_identical_with_augmentations(images, tmp_path, trainer):
    url, _ = images
    ref_log = tmp_path / "ref.log"
    assert trainer.start(TRAIN, url, tmp_path / "ref.pt", ref_log, NUM_WORKERS="0").wait(180) == 0
    reference = ref_log.read_text().splitlines()
    assert len(reference) == 2 * (N_IMG // 4) + 1
    ckpt, logp = tmp_path / "run.pt", tmp_path / "run.log"
    for nw, target in (("0", 8), ("2", 22)):  # killed mid-epoch 0, then mid-epoch 1
        proc = trainer.start(TRAIN, url, ckpt, logp, NUM_WORKERS=nw, STEP_DELAY="0.05")
        assert trainer.wait_for_lines(logp, target, proc, timeout=120) >= target
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        trainer.cut_log(logp, read_checkpoint(str(ckpt))["trainer"]["step"])
    assert trainer.start(TRAIN, url, ckpt, logp, NUM_WORKERS="3").wait(180) == 0
    assert logp.read_text().splitlines() == reference


def _unfused(sample, rng):  # a plain function: the pipeline cannot fuse it
    return AUGMENT(sample, rng)


def test_fused_decode_crop_equals_decode_then_crop(images, mixed_sizes):
    from dataversion.training.decode import decode_image

    crop = RandomResizedCrop(32, scale=(0.2, 1.0))
    for data in images[1][:12] + mixed_sizes[1][:12]:
        for s in range(3):
            fused = crop.decode_crop(data, sample_generator(0, 0, s))
            plain = crop({"image": decode_image(data)}, sample_generator(0, 0, s))["image"]
            assert torch.equal(fused, plain)
    url = images[0]
    assert _augmented(url, transform=Compose([_unfused, _global_noise])) == _augmented(url)
    big = _jpeg(np.random.default_rng(5), 600, 800)
    draft = RandomResizedCrop(64, scale=(0.9, 1.0), draft=True).decode_crop(big, sample_generator(0, 0, 1))
    full = RandomResizedCrop(64, scale=(0.9, 1.0)).decode_crop(big, sample_generator(0, 0, 1))
    assert draft.shape == full.shape == (3, 64, 64)
    assert (draft.float() - full.float()).abs().mean() < 12  # DCT-scaled decode: close, not equal
