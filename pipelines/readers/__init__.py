"""Readers: list raw objects under a local directory or an s3:// prefix, read them, resolve
their labels, and split each object into input units (one per file, one per JSONL line)."""

from .labels import LabelResolver, is_sidecar, normalize_label
from .source import RawObject, Source, open_source

__all__ = ["RawObject", "Source", "open_source", "LabelResolver", "is_sidecar", "normalize_label"]
