"""Every rule of the ingestion pipeline in one frozen value, with a stable hash.

The config hash is recorded in each ingest commit's provenance: two runs with the same
hash applied the same rules. Change a default here and the hash changes with it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from dataversion.errors import BadInputError
from dataversion.hashing import canonical_json, object_id

from .dedup.minhash import SHINGLE_SCHEME
from .dedup.phash import PHASH_ALGORITHM

# Bump when a change to the code changes which records a given input yields.
PIPELINE_VERSION = "2"  # 2: issue 18 redaction rules (more kinds, context exceptions)


@dataclass(frozen=True)
class TextRules:
    """Cleaning of text records (files and JSONL lines)."""

    nfc: bool = True
    remove_control_chars: bool = True
    normalize_whitespace: bool = True
    min_chars: int = 1
    max_chars: int = 1_000_000
    # a whole-object text larger than this is `too_large` before it is read (JSONL objects
    # are bounded by IngestConfig.max_object_bytes instead: their lines are the units)
    max_bytes: int = 16 * 1024 * 1024
    redact_pii: bool = True
    pii_kinds: tuple[str, ...] = ("email", "phone", "ipv4", "ipv6", "card", "iban", "api_key")


@dataclass(frozen=True)
class ImageRules:
    max_pixels: int = 89_478_485  # Pillow's own default bomb limit
    min_width: int = 1
    min_height: int = 1
    apply_exif_orientation: bool = True


@dataclass(frozen=True)
class AudioRules:
    min_seconds: float = 0.0
    max_seconds: float = 4 * 3600.0


# representative policies of dedup clusters (`DedupRules.representative`)
POLICIES = ("first", "longest", "shortest", "oldest")


@dataclass(frozen=True)
class DedupRules:
    exact: bool = True
    near_text: bool = True
    shingle_size: int = 5  # words per shingle
    num_perm: int = 112
    bands: int = 16  # rows per band = num_perm // bands
    text_threshold: float = (
        0.8  # estimated Jaccard similarity at or above which two texts are near-duplicates
    )
    seed: int = 42
    near_image: bool = True
    phash_max_distance: int = (
        4  # Hamming distance (of 64 bits) at or below which two images are near-duplicates
    )
    max_window: int = (
        32  # per LSH bucket, each member is compared with its next `max_window` members
    )
    # which record of a cluster is kept (the branch's record always wins): first (in
    # object key, line order), longest, shortest (text characters, bytes otherwise), oldest
    # (source modification time, then first)
    representative: str = "first"
    # rounds of label propagation for near-duplicate clusters (hops of the longest chain)
    max_rounds: int = 12

    @property
    def rows_per_band(self) -> int:
        return self.num_perm // self.bands

    def index_params(self) -> dict[str, Any]:
        """The parameters a stored dedup index depends on (a mismatch means: rebuild it)."""
        return {
            "shingle_size": self.shingle_size,
            "num_perm": self.num_perm,
            "seed": self.seed,
            "phash": PHASH_ALGORITHM,
            "shingles": SHINGLE_SCHEME,
        }


@dataclass(frozen=True)
class IngestConfig:
    """All ingestion rules. Build with keyword overrides or `IngestConfig.from_dict`."""

    text_field: str = "text"  # JSONL: the field holding the text; other fields become metadata
    label_field: str | None = "label"  # JSONL: a field holding the label (removed from metadata)
    folder_labels: bool = True  # cats/001.png -> "cats"
    label_map: dict[str, str] = field(default_factory=dict)  # raw label -> normalized label
    lowercase_labels: bool = False
    reject_extension_mismatch: bool = (
        True  # foo.png that is not an image: rejected, not kept as text
    )
    reject_binary: bool = True  # files that are no known image/audio format and not text
    text: TextRules = field(default_factory=TextRules)
    image: ImageRules = field(default_factory=ImageRules)
    audio: AudioRules = field(default_factory=AudioRules)
    dedup: DedupRules = field(default_factory=DedupRules)
    batch_size: int = 2048  # records per batch inside a DoFn
    include_hidden: bool = False  # dot-files and dot-dirs: rejected `hidden_file`, or read
    # bounded memory: an object over max_object_bytes is `too_large` before it is read; a
    # worker processes its batch in chunks of at most max_batch_bytes of raw bytes and
    # max_batch_pixels of declared image pixels (an object over a budget is a chunk alone).
    # A few MiB is also the fastest chunk: its numpy temporaries stay in cache and the
    # allocator reuses them (10,000 ~1 KB texts: 18-19 us/doc in chunks of ~2-4 MiB,
    # 26-29 us in one chunk of 10 MiB)
    max_object_bytes: int = 256 * 1024 * 1024
    max_batch_bytes: int = 4 * 1024 * 1024
    max_batch_pixels: int = 100_000_000
    target_shard_bytes: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        d = self.dedup
        if d.num_perm <= 0 or d.bands <= 0 or d.num_perm % d.bands:
            raise BadInputError(
                f"dedup: num_perm ({d.num_perm}) must be a positive multiple of bands ({d.bands})"
            )
        if not 0.0 < d.text_threshold <= 1.0:
            raise BadInputError(f"dedup: text_threshold must be in (0, 1], got {d.text_threshold}")
        if not 0 <= d.phash_max_distance < 64:
            raise BadInputError(
                f"dedup: phash_max_distance must be in [0, 63], got {d.phash_max_distance}"
            )
        if d.representative not in POLICIES:
            raise BadInputError(
                f"dedup: representative must be one of {', '.join(POLICIES)}, got {d.representative!r}"
            )
        if d.max_rounds < 1:
            raise BadInputError(f"dedup: max_rounds must be >= 1, got {d.max_rounds}")
        if d.shingle_size <= 0:
            raise BadInputError("dedup: shingle_size must be positive")
        if self.text.min_chars < 0 or self.text.max_chars < self.text.min_chars:
            raise BadInputError("text: need 0 <= min_chars <= max_chars")
        for name in ("max_object_bytes", "max_batch_bytes", "max_batch_pixels"):
            if getattr(self, name) <= 0:
                raise BadInputError(f"{name} must be positive, got {getattr(self, name)}")
        if self.text.max_bytes <= 0:
            raise BadInputError(f"text: max_bytes must be positive, got {self.text.max_bytes}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @property
    def hash(self) -> str:
        """Stable hash of every rule (and the pipeline version): canonical JSON, xxh3-128."""
        return object_id(
            canonical_json({"pipeline_version": PIPELINE_VERSION, "config": self.to_dict()})
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IngestConfig:
        """Build from a (possibly partial) dict; nested sections may be partial too."""
        sections = {
            "text": TextRules,
            "image": ImageRules,
            "audio": AudioRules,
            "dedup": DedupRules,
        }
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise BadInputError(f"unknown ingest config keys: {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key in sections:
                sub = sections[key]
                sub_known = {f.name for f in dataclasses.fields(sub)}
                bad = set(value) - sub_known
                if bad:
                    raise BadInputError(f"unknown ingest config keys in {key}: {sorted(bad)}")
                value = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
                kwargs[key] = sub(**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    def replace(self, **changes: Any) -> IngestConfig:
        return dataclasses.replace(self, **changes)
