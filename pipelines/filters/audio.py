"""Audio checks: full decode with soundfile (libsndfile: WAV as RIFF, big-endian RIFX and
RF64/BW64, AIFF/AIFC, AU, FLAC, OGG Vorbis and Opus), duration, sample rate, channels,
minimum/maximum duration. A file that decodes to fewer frames than its header announces is
rejected as truncated."""

from __future__ import annotations

import io
from dataclasses import dataclass

from dataversion.errors import human_message
from dataversion.sniff import AUDIO_FORMATS, sniff_format

from ..config import AudioRules
from . import Drop

_BLOCK_FRAMES = 1 << 16


@dataclass(frozen=True)
class AudioInfo:
    format: str
    duration_s: float
    sample_rate: int
    channels: int
    frames: int

    def meta(self) -> dict:
        return {
            "format": self.format,
            "duration_s": round(self.duration_s, 6),
            "sample_rate": self.sample_rate,
            "channels": self.channels,
        }


def wav_data_shortfall(data: bytes) -> int:
    """Bytes missing from a WAV's `data` chunk (0 if complete or not parseable).

    libsndfile quietly shortens the frame count of a truncated WAV to what is present, so
    truncation is only visible in the chunk header. RIFF sizes are little-endian, RIFX
    ones big-endian; RF64 keeps the real size in its `ds64` chunk (the `data` chunk says
    0xFFFFFFFF), which libsndfile checks itself.
    """
    order = "big" if data[:4] == b"RIFX" else "little"
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], order)
        if chunk_id == b"data":
            if size == 0xFFFFFFFF:  # streaming writers and RF64: size elsewhere
                return 0
            return max(0, pos + 8 + size - len(data))
        pos += 8 + size + (size & 1)
    return 0


def check_audio(data: bytes, rules: AudioRules = AudioRules()) -> AudioInfo | Drop:
    """Decode one audio file fully; never raises for bad input (returns a Drop)."""
    import soundfile as sf

    fmt = sniff_format(data[:16])
    if fmt not in AUDIO_FORMATS:
        return Drop("not_audio", "content is not WAV, RF64, AIFF, AU, FLAC or OGG audio")
    if fmt == "wav":
        missing = wav_data_shortfall(data)
        if missing:
            return Drop(
                "truncated_audio", f"wav data chunk is {missing} bytes shorter than its header says"
            )
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            declared = f.frames
            rate, channels = f.samplerate, f.channels
            decoded = 0
            for block in f.blocks(blocksize=_BLOCK_FRAMES, dtype="int16", always_2d=True):
                decoded += len(block)
    except Exception as e:  # noqa: BLE001 - soundfile raises LibsndfileError, RuntimeError...
        return Drop("corrupt_audio", f"{fmt} does not decode: {human_message(e)}")
    if rate <= 0 or channels <= 0:
        return Drop("corrupt_audio", f"{fmt} header has sample rate {rate}, channels {channels}")
    if decoded < declared:
        return Drop(
            "truncated_audio", f"{fmt} header announces {declared} frames, only {decoded} decode"
        )
    if decoded == 0:
        return Drop("empty_audio", f"{fmt} has no audio frames")
    duration = decoded / rate
    if duration < rules.min_seconds:
        return Drop("audio_too_short", f"{duration:.3f} s, minimum {rules.min_seconds} s")
    if duration > rules.max_seconds:
        return Drop("audio_too_long", f"{duration:.3f} s, maximum {rules.max_seconds} s")
    return AudioInfo(fmt, duration, rate, channels, decoded)
