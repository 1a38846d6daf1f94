import io

from PIL import Image
from pipeline_samples import png_bytes, wav_bytes

from pipelines.config import AudioRules, ImageRules
from pipelines.filters import Drop
from pipelines.filters.audio import check_audio
from pipelines.filters.image import check_image


def test_every_image_format_decodes_with_size_and_format():
    for fmt, name in (
        ("PNG", "png"),
        ("JPEG", "jpeg"),
        ("GIF", "gif"),
        ("BMP", "bmp"),
        ("WEBP", "webp"),
    ):
        info = check_image(png_bytes(40, 30, fmt=fmt))
        assert not isinstance(info, Drop), (fmt, info)
        assert (info.format, info.width, info.height) == (name, 40, 30)
        assert info.meta() == {"format": name, "width": 40, "height": 30}


def test_truncated_png_and_jpeg_rejected():
    for fmt in ("PNG", "JPEG"):
        data = png_bytes(200, 200, fmt=fmt)
        d = check_image(data[: len(data) // 2])
        assert isinstance(d, Drop) and d.reason == "corrupt_image", (fmt, d)


def test_text_is_not_an_image():
    assert check_image(b"just text").reason == "not_an_image"


def test_decompression_bomb_rejected_before_decoding():
    data = png_bytes(300, 300)
    d = check_image(data, ImageRules(max_pixels=300 * 300 - 1))
    assert isinstance(d, Drop) and d.reason == "decompression_bomb"
    # a real bomb: a tiny file that declares a huge canvas
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, "PNG")
    assert len(buf.getvalue()) < 200_000
    assert check_image(buf.getvalue()).reason == "decompression_bomb"


def test_min_size():
    assert (
        check_image(png_bytes(10, 10), ImageRules(min_width=16, min_height=16)).reason
        == "image_too_small"
    )


def test_exif_orientation_applied_to_size_and_recorded():
    img = Image.open(io.BytesIO(png_bytes(60, 20, fmt="JPEG")))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: displayed 20 x 60
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    info = check_image(buf.getvalue())
    assert (info.width, info.height, info.orientation) == (20, 60, 6)
    assert info.meta()["exif_orientation"] == 6
    plain = check_image(buf.getvalue(), ImageRules(apply_exif_orientation=False))
    assert (plain.width, plain.height) == (60, 20)


def test_audio_formats_decode_with_duration_rate_channels():
    for fmt in ("WAV", "FLAC", "OGG"):
        info = check_audio(wav_bytes(0.5, 8000, channels=2, fmt=fmt))
        assert not isinstance(info, Drop), (fmt, info)
        assert info.sample_rate == 8000 and info.channels == 2 and abs(info.duration_s - 0.5) < 0.01


def test_truncated_and_corrupt_audio_rejected():
    data = wav_bytes(1.0)
    assert check_audio(data[: len(data) // 2]).reason == "truncated_audio"
    assert check_audio(b"RIFF\x00\x00\x00\x00WAVEjunk").reason in (
        "corrupt_audio",
        "truncated_audio",
    )
    flac = wav_bytes(1.0, fmt="FLAC")
    assert isinstance(check_audio(flac[: len(flac) // 2]), Drop)
    assert check_audio(b"not audio").reason == "not_audio"


def test_duration_limits():
    data = wav_bytes(0.5)
    assert check_audio(data, AudioRules(min_seconds=1.0)).reason == "audio_too_short"
    assert check_audio(data, AudioRules(max_seconds=0.25)).reason == "audio_too_long"
