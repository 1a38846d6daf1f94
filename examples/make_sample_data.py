"""Generate a small raw multimodal corpus with the usual mess mixed in.

    python examples/make_sample_data.py ./sample-raw [--docs 2000] [--seed 0]

Writes text files, a JSONL file (with some broken lines), PNG/JPEG images in label folders,
WAV clips, plus exact duplicates, near-duplicates, PII and bad files (empty, invalid UTF-8,
truncated PNG, text named .png, truncated WAV). Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random

WORDS = (
    "data model train learn batch epoch token image audio sample label clean shard commit "
    "branch vector matrix signal noise river mountain city forest ocean market science music "
    "history language network memory cloud compute storage version pipeline feature"
).split()


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def document(rng: random.Random) -> str:
    return " ".join(sentence(rng, rng.randint(8, 16)) for _ in range(rng.randint(6, 12)))


def near_duplicate(rng: random.Random, text: str) -> str:
    words = text.split()
    for _ in range(max(1, len(words) // 40)):
        words[rng.randrange(len(words))] = rng.choice(WORDS)
    return " ".join(words)


def write(path: str, data: bytes | str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def make_images(out: str, rng: random.Random, n: int) -> None:
    from PIL import Image, ImageDraw

    for i in range(n):
        label = ("cats", "dogs", "birds")[i % 3]
        img = Image.new("RGB", (64 + rng.randint(0, 64), 64 + rng.randint(0, 64)), tuple(rng.randint(0, 255) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = rng.randint(0, 40), rng.randint(0, 40)
            draw.rectangle([x0, y0, x0 + rng.randint(10, 40), y0 + rng.randint(10, 40)], fill=tuple(rng.randint(0, 255) for _ in range(3)))
        buf = io.BytesIO()
        fmt = "PNG" if i % 2 == 0 else "JPEG"
        img.save(buf, format=fmt, quality=90)
        write(f"{out}/images/{label}/{i:04d}.{fmt.lower().replace('jpeg', 'jpg')}", buf.getvalue())
        if i % 10 == 0:  # a near-duplicate: same picture, slightly resized
            buf2 = io.BytesIO()
            img.resize((img.width - 2, img.height - 2)).save(buf2, format="PNG")
            write(f"{out}/images/{label}/{i:04d}-copy.png", buf2.getvalue())
    png = io.BytesIO()
    Image.new("RGB", (80, 80), (10, 200, 30)).save(png, format="PNG")
    write(f"{out}/images/bad/truncated.png", png.getvalue()[: len(png.getvalue()) // 2])
    write(f"{out}/images/bad/not-really.png", "this is text, not a PNG\n")


def make_audio(out: str, rng: random.Random, n: int) -> None:
    import numpy as np
    import soundfile as sf

    for i in range(n):
        sr = 16000
        t = np.arange(int(sr * rng.uniform(0.5, 2.0))) / sr
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 800) * t)
        buf = io.BytesIO()
        sf.write(buf, wave, sr, format="WAV")
        write(f"{out}/audio/{('speech', 'music')[i % 2]}/{i:04d}.wav", buf.getvalue())
        if i == 0:
            write(f"{out}/audio/bad/truncated.wav", buf.getvalue()[:60])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--audio", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    out = args.out
    docs = [document(rng) for _ in range(args.docs)]
    for i, d in enumerate(docs[: args.docs // 2]):
        write(f"{out}/text/{i % 20:02d}/doc{i:05d}.txt", d)
    lines = []
    for i, d in enumerate(docs[args.docs // 2 :]):
        lines.append(json.dumps({"text": d, "url": f"https://example.com/{i}", "lang": "en"}))
        if i % 50 == 0:
            lines.append('{"text": "broken line, no closing quote}')
    write(f"{out}/text/web.jsonl", "\n".join(lines) + "\n")
    for i in range(0, args.docs // 2, 25):  # exact duplicates under another name
        write(f"{out}/text/dups/copy{i:05d}.txt", docs[i])
    for i in range(1, args.docs // 2, 20):  # near duplicates
        write(f"{out}/text/near/near{i:05d}.txt", near_duplicate(rng, docs[i]))
    write(f"{out}/text/pii.txt", "Contact jane.doe@example.com or +1 415-555-0132 from 192.168.10.7; card 4111 1111 1111 1111. " + docs[0][:200])
    write(f"{out}/text/bad/empty.txt", "")
    write(f"{out}/text/bad/whitespace.txt", "   \n\t  \n")
    write(f"{out}/text/bad/latin1.txt", "caf\xe9 cr\xe8me br\xfbl\xe9e".encode("latin-1"))
    make_images(out, rng, args.images)
    make_audio(out, rng, args.audio)
    n = sum(len(f) for _, _, f in os.walk(out))
    print(f"wrote {n} files under {out}")


if __name__ == "__main__":
    main()
