"""Feast definitions over dataversion's per-commit features (imported by `feast apply`).

One entity, `record` (join key `record_id`: the 32-hex-digit record id), a feature view per
modality plus labels, and the `training` feature service. Each view reads the rows that
`dataversion features publish` exported for it: data/offline/<view>.parquet holds, for every
published commit, the records it introduced or changed, stamped with its time, so Feast's
point-in-time join returns each record's features as of any commit. Keep the names in step
with dataversion/features.py (FEATURE_VIEWS); a test checks they match.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

record = Entity(
    name="record",
    join_keys=["record_id"],
    value_type=ValueType.STRING,
    description="One record of a dataversion snapshot; its id is the xxh3-128 of its content.",
)


def _source(view: str) -> FileSource:
    # Relative paths resolve against this repository's directory (Feast's FileSource rule).
    return FileSource(
        name=f"{view}_source",
        path=f"data/offline/{view}.parquet",
        timestamp_field="event_timestamp",
    )


def _view(name: str, fields: list[Field], description: str) -> FeatureView:
    return FeatureView(
        name=name,
        entities=[record],
        ttl=timedelta(0),  # never expires: a record's features hold until a commit changes them
        schema=[Field(name="record_id", dtype=String), *fields],
        source=_source(name),
        online=True,
        description=description,
        tags={"owner": "dataversion"},
    )


text_stats = _view(
    "text_stats",
    [
        Field(name="char_count", dtype=Int64),
        Field(name="word_count", dtype=Int64),
        Field(name="pii_redactions", dtype=Int64),
        Field(name="quality_score", dtype=Float64),
    ],
    "Text records: length, words, PII replacements made by cleaning, a 0..1 quality score.",
)
image_stats = _view(
    "image_stats",
    [
        Field(name="width", dtype=Int64),
        Field(name="height", dtype=Int64),
        Field(name="image_format", dtype=String),
        Field(name="phash", dtype=String),
    ],
    "Image records: oriented size, format, 64-bit perceptual hash (16 hex digits).",
)
audio_stats = _view(
    "audio_stats",
    [
        Field(name="duration_s", dtype=Float64),
        Field(name="sample_rate", dtype=Int64),
        Field(name="channels", dtype=Int64),
    ],
    "Audio records: duration, sample rate, channels.",
)
labels = _view(
    "labels",
    [Field(name="label", dtype=String), Field(name="modality", dtype=String)],
    "Every record: its label (null if none) and modality.",
)

training = FeatureService(
    name="training",
    features=[text_stats, image_stats, audio_stats, labels],
    description="Everything a training job joins onto a snapshot's records.",
)
