"""Sample-data builders for the pipeline tests: every input is generated here."""

from __future__ import annotations

import io
import random

import numpy as np


def png_bytes(
    width: int = 64, height: int = 48, seed: int = 0, fmt: str = "PNG", **save_kw
) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # coarse structure: pHash sees it
    img = Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, fmt, **save_kw)
    return buf.getvalue()


def wav_bytes(
    seconds: float = 0.5, rate: int = 8000, channels: int = 1, fmt: str = "WAV", seed: int = 0
) -> bytes:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    frames = int(seconds * rate)
    data = (rng.standard_normal((frames, channels)) * 0.1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, data, rate, format=fmt, **({"subtype": "PCM_16"} if fmt == "WAV" else {}))
    return buf.getvalue()


def words_doc(rng: random.Random, vocab: list[str], n: int = 150) -> str:
    return " ".join(rng.choice(vocab) for _ in range(n))
